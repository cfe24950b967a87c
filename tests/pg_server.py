"""A throwaway PostgreSQL cluster for tests: Debian's ``postgresql`` server (installed here when
missing, as tests/e2e/test_prometheus.py installs Prometheus), ``initdb`` in a temp dir, on a free
loopback port, trust authentication, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster belongs to
the ``postgres`` user the Debian package creates and its commands run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from extproc.ports import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_postgresql() -> Path:
    """The server's bin directory (initdb, pg_ctl, postgres); installs Debian's package once."""
    bin_dir = _bin_dir()
    if bin_dir is not None:
        return bin_dir
    install = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        subprocess.run(install, check=True, capture_output=True, env=env)
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("the postgresql package installed no initdb")
    return bin_dir


@dataclass
class Postgres:
    bin_dir: Path
    data: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._pg_ctl("-w", "-t", "30", "-l", str(self.data / "server.log"), "-o", opts, "start")
        self.wait_ready()

    def stop(self) -> None:
        self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def start_postgres() -> Postgres:
    bin_dir = ensure_postgresql()
    root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(root, 0o755)
        data.mkdir(mode=0o700)
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    pg = Postgres(bin_dir, data, free_port(), as_user)
    pg.start()
    return pg


def remove(pg: Postgres) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
        pg.stop()
    shutil.rmtree(pg.data.parent, ignore_errors=True)
