"""A stale process on a port the gateway needs cannot go unnoticed.

The "stale process" is a real listener in another process, with SO_REUSEPORT as an
old extproc (or Envoy listener) would have it, so the kernel would happily let a new
gRPC server share the port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from extproc.ports import PortInUse, free_port, holder, is_free
from extproc.supervisor import Stack

HOLD = """
import socket, sys, time
s = socket.socket()
if sys.argv[1] == "1":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(120)
"""


@contextmanager
def stale_listener(reuseport: bool = True) -> Iterator[tuple[int, int]]:
    """(port, pid) of another process listening on a fresh port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, "1" if reuseport else "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        proc.kill()
        proc.wait()


def config_file(tmp_path: Path) -> Path:
    config = {
        "config": {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()},
        "binds": [
            {
                "port": free_port(),
                "listeners": [{"routes": [{"backends": [{"ai": {"provider": {"openAI": {}}}}]}]}],
            }
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_stale_process_on_the_extproc_port_stops_the_start(tmp_path: Path) -> None:
    with stale_listener() as (port, pid):
        stack = Stack(
            str(config_file(tmp_path)), tmp_path, extproc_port=port, authz_port=free_port(), mock_port=None
        )
        try:
            with pytest.raises(PortInUse) as err:
                stack.start(timeout=10)
        finally:
            stack.stop()  # if it did start, nothing may outlive the test
        assert stack.procs == {}  # nothing was started
        message = str(err.value)
        assert f"port {port} (extproc) is already in use by pid {pid} ({sys.executable} -c" in message
        assert message.endswith("stop that process or choose another port")


def test_every_busy_port_is_named(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    readiness = yaml.safe_load(path.read_text())["config"]["readinessPort"]
    with stale_listener() as (mock_port, _), stale_listener() as (authz_port, _):
        stack = Stack(
            str(path), tmp_path, extproc_port=free_port(), authz_port=authz_port, mock_port=mock_port
        )
        try:
            with pytest.raises(PortInUse) as err:
                stack.start(timeout=10)
        finally:
            stack.stop()
    assert err.value.ports == sorted([mock_port, authz_port])
    assert f"port {authz_port} (authz)" in str(err.value)
    assert f"port {mock_port} (mock provider)" in str(err.value)
    assert stack.needed_ports()[readiness] == "Envoy readiness"


def test_a_port_in_time_wait_is_free_and_a_listener_is_not() -> None:
    with stale_listener(reuseport=False) as (port, pid):
        assert not is_free(port)
        assert (holder(port) or "").startswith(f"pid {pid} ({sys.executable} -c")
    # After a connection closed by the listener's side the port has TIME_WAIT entries but no listener.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    assert is_free(port)


@pytest.mark.parametrize("reuseport", [True, False], ids=["stale-with-reuseport", "stale-plain"])
def test_an_extproc_that_cannot_bind_exits_non_zero_naming_the_holder(
    tmp_path: Path, reuseport: bool
) -> None:
    with stale_listener(reuseport) as (port, pid):
        proc = subprocess.run(
            [sys.executable, "-m", "extproc", "extproc", "--config", str(config_file(tmp_path)),
             "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"error: extproc: cannot listen on 127.0.0.1:{port}: the port is already in use by pid {pid}" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may offer the same ephemeral port twice in a row; a config must not get it twice."""
    from extproc import ports

    offered = iter([45001, 45001, 45002])

    class FakeSocket:
        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, addr: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(ports.socket, "socket", FakeSocket)
    monkeypatch.setattr(ports, "_handed_out", set())
    assert [ports.free_port(), ports.free_port()] == [45001, 45002]


class _Running:
    """A child that has not exited, with a pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> None:
        return None


def test_ready_waits_for_every_extproc_worker_to_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy is ready once one worker answers its health check; "ready" waits for all of them
    (a start that returned with the second worker still binding failed a CI run)."""
    import urllib.request

    from extproc import ports, supervisor

    stack = Stack("gw.yaml", tmp_path, extproc_port=41000, authz_port=41001, extproc_workers=2)
    stack.procs = {"extproc": _Running(101), "extproc-1": _Running(102)}  # type: ignore[dict-item]
    stack.readiness_port = 41004  # what render() sets from the config

    class Ready:
        status = 200

        def __enter__(self) -> Ready:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Ready())
    listening = iter([[101], [101], [101, 102]])
    seen: list[int] = []

    def listening_pids(port: int) -> list[int]:
        assert port == 41000
        pids = next(listening)
        seen.append(len(pids))
        return pids

    monkeypatch.setattr(ports, "listening_pids", listening_pids)
    monkeypatch.setattr(supervisor.time, "sleep", lambda s: None)
    stack.wait_ready(timeout=5)
    assert seen == [1, 1, 2]  # kept waiting while only the first worker listened

    one = Stack("gw.yaml", tmp_path, extproc_port=41002, authz_port=41003, extproc_workers=1)
    one.procs = {"extproc": _Running(103)}  # type: ignore[dict-item]
    one.readiness_port = 41005
    monkeypatch.setattr(ports, "listening_pids", lambda port: pytest.fail("not needed for one worker"))
    one.wait_ready(timeout=5)
