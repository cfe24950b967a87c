"""The supervisor restarts what dies, through the real Envoy: a sidecar killed (SIGKILL, as the
kernel's OOM killer would) comes back by itself, Envoy keeps answering meanwhile (a provider's 200
or the client API's JSON 503, never a refused connection), and one extproc worker dying leaves the
other alone. A deliberate ``stop_one`` is not undone, and ``stop`` stops everything."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from extproc import ports
from extproc.restart import Backoff
from extproc.supervisor import Stack
from tests.e2e.conftest import OPENAI_KEY, free_port, listener_config, provider_route

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
FAST = Backoff(first=0.1, most=1.0, stable_after=3.0, warn_after=3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("restarts")
    mock_port = free_port()
    host = f"127.0.0.1:{mock_port}"
    access = {"modelAccess": {"default": ["gpt-4o-mini"]}}
    config = listener_config(
        [
            provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
            provider_route("checked", "/checked", {"openAI": {}}, host, OPENAI_KEY, **access),
        ],
        sidecarTimeout="1s",
    )
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw = Stack(
        str(path),
        tmp,
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=mock_port,  # the stack's own mock: supervised like the sidecars
        extproc_workers=2,
        quiet=True,
        backoff=FAST,
    )
    gw.url = f"http://127.0.0.1:{config['binds'][0]['port']}"  # type: ignore[attr-defined]
    gw.start(timeout=30)
    try:
        yield gw
    finally:
        gw.stop()


def chat(stack: Stack, prefix: str) -> httpx.Response:
    url = f"{stack.url}{prefix}/v1/chat/completions"  # type: ignore[attr-defined]
    return httpx.post(url, json=CHAT, timeout=10)


def answered_well(resp: httpx.Response) -> bool:
    """A provider's answer, or the gateway's JSON 503 in OpenAI's shape."""
    if resp.status_code == 200:
        return True
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers
    err = resp.json()["error"]
    assert err["message"] and err["code"], err
    return False


def until_served(stack: Stack, prefix: str, within: float = 15.0) -> int:
    """Requests until one is a 200 (each a 200 or a JSON 503, never a refused connection)."""
    deadline = time.monotonic() + within
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        if answered_well(chat(stack, prefix)):
            return tries
        time.sleep(0.1)
    raise AssertionError(f"{prefix} was not served again within {within}s")


def kill(stack: Stack, name: str) -> int:
    pid = stack.procs[name].pid
    os.kill(pid, signal.SIGKILL)
    return pid


def restarted(stack: Stack, name: str, old_pid: int, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        proc = stack.procs.get(name)
        if proc is not None and proc.pid != old_pid and proc.poll() is None:
            return proc.pid
        time.sleep(0.05)
    raise AssertionError(f"{name} was not restarted within {within}s")


def test_a_killed_extproc_worker_comes_back_and_the_other_is_left_alone(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    assert until_served(stack, "/open") == 1
    other = stack.procs["extproc"].pid
    with caplog.at_level(logging.WARNING, logger="gateway.supervisor"):
        old = kill(stack, "extproc-1")
        for _ in range(20):  # while it is down: answers, never a refused connection
            answered_well(chat(stack, "/open"))
        new = restarted(stack, "extproc-1", old)
    assert stack.procs["extproc"].pid == other and stack.procs["extproc"].poll() is None
    deadline = time.monotonic() + 10
    while sorted(ports.listening_pids(stack.extproc_port)) != sorted([other, new]):
        assert time.monotonic() < deadline, ports.listening_pids(stack.extproc_port)
        time.sleep(0.1)
    until_served(stack, "/open")
    assert all(chat(stack, "/open").status_code == 200 for _ in range(10))
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("extproc-1 killed by SIGKILL") and "; restarting in" in m for m in logged), logged
    assert f"extproc-1 restarted (pid {new})" in logged


def test_a_killed_authz_comes_back_and_checked_routes_recover(stack: Stack) -> None:
    assert until_served(stack, "/checked") == 1
    old = kill(stack, "authz")
    restarted(stack, "authz", old)
    until_served(stack, "/checked")
    assert chat(stack, "/open").status_code == 200


def test_a_killed_mock_provider_comes_back(stack: Stack) -> None:
    old = kill(stack, "mock")
    restarted(stack, "mock", old)
    until_served(stack, "/open")


def test_envoy_itself_is_restarted(stack: Stack) -> None:
    old = kill(stack, "envoy")
    restarted(stack, "envoy", old)
    deadline = time.monotonic() + 15
    while True:  # Envoy's listeners take a moment to open again
        try:
            if chat(stack, "/open").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "Envoy did not serve again"
        time.sleep(0.2)


def test_a_deliberate_stop_is_not_undone_and_stop_stops_everything(stack: Stack) -> None:
    """Last in this module: it stops the stack."""
    stack.stop_one("authz")
    time.sleep(FAST.first * 10)
    assert "authz" not in stack.procs
    assert ports.listening_pids(stack.authz_port) == []
    resp = chat(stack, "/checked")
    assert resp.status_code == 503 and "authoriz" in resp.json()["error"]["message"]
    pids = [p.pid for p in stack.procs.values()]
    stack.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert stack.procs == {}
