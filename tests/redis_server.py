"""A real Redis for tests: Debian's ``redis-server`` on a free loopback port, nothing persisted.

It also listens on a Unix socket (``unix_url``), for the store's ``unix://`` URLs: the socket
lives in the system's temporary directory, since a socket path is limited to 107 bytes and
pytest's directories are longer.

``make test`` (and so ``.ci/run``) installs the package when it is missing (``make test-deps``);
a test that needs Redis fails, naming that target, rather than being skipped without it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from extproc.ports import free_port


def binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        pytest.fail("redis-server is not installed: `make test-deps` installs Debian's redis-server package")
    return found


@dataclass
class RedisServer:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_socket(self) -> Path:
        return Path(tempfile.gettempdir()) / f"llmgw-test-redis-{self.port}.sock"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_socket}?db=0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--protected-mode", "no", "--daemonize", "no",
            "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700",
        ]  # fmt: skip
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (log in {self.workdir})")
            time.sleep(0.05)
        raise TimeoutError(f"redis-server did not answer on {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    return RedisServer(port or free_port(), workdir).start()
