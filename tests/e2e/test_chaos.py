"""Chaos, bounded: 20 clients keep calling while an extproc worker is killed, then authz, then
extproc is frozen. Every answer is a provider's 200 or a JSON error in the client API's shape,
no request passes authz unchecked, and the gateway serves again by itself within seconds."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from extproc.restart import Backoff
from extproc.supervisor import Stack
from tests.e2e.conftest import ANTHROPIC_KEY, OPENAI_KEY, free_port, listener_config, provider_route

CLIENTS = 20
ALLOWED, FORBIDDEN = "gpt-4o-mini", "gpt-4o"


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("chaos")
    mock_port = free_port()
    host = f"127.0.0.1:{mock_port}"
    access = {"modelAccess": {"default": [ALLOWED, "claude-*"]}}
    config = listener_config(
        [
            provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
            provider_route("checked", "/checked", {"openAI": {}}, host, OPENAI_KEY, **access),
            provider_route("messages", "/messages", {"anthropic": {}}, host, ANTHROPIC_KEY, **access),
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
        mock_port=mock_port,
        extproc_workers=2,
        quiet=True,
        backoff=Backoff(first=0.1, most=1.0),
    )
    gw.url = f"http://127.0.0.1:{config['binds'][0]['port']}"  # type: ignore[attr-defined]
    gw.start(timeout=30)
    try:
        yield gw
    finally:
        gw.stop()


# (name, path, body, the client API)
CALLS = [
    ("open", "/open/v1/chat/completions", {"model": "gpt-4o"}, "openai"),
    ("allowed", "/checked/v1/chat/completions", {"model": ALLOWED}, "openai"),
    ("forbidden", "/checked/v1/chat/completions", {"model": FORBIDDEN}, "openai"),
    ("messages", "/messages/v1/messages", {"model": "claude-3-5-haiku-latest", "max_tokens": 8}, "anthropic"),
]


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, name: str, api: str, resp: httpx.Response) -> None:
        problem = shape_problem(name, api, resp)
        with self.lock:
            self.statuses[(name, resp.status_code)] += 1
            if problem:
                self.problems.append(problem)


def shape_problem(name: str, api: str, resp: httpx.Response) -> str | None:
    if resp.status_code == 200:
        return "a forbidden model was served" if name == "forbidden" else None
    if resp.headers.get("content-type") != "application/json":
        return f"{name}: {resp.status_code} without JSON: {resp.text[:200]!r}"
    body = resp.json()
    if api == "anthropic":
        ok = body.get("type") == "error" and body["error"].get("type") and body["error"].get("message")
    else:
        ok = set(body) == {"error"} and body["error"].get("message") and body["error"].get("code")
    return None if ok else f"{name}: not {api}'s error shape: {body}"


def client(stack: Stack, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=stack.url, timeout=10) as http:  # type: ignore[attr-defined]
        while not stop.is_set():
            name, path, extra, api = rng.choice(CALLS)
            body = {**extra, "messages": [{"role": "user", "content": "hi"}]}
            try:
                tally.note(name, api, http.post(path, json=body))
            except httpx.HTTPError as exc:  # Envoy never went away: no transport error is acceptable
                with tally.lock:
                    tally.problems.append(f"{name}: {type(exc).__name__}: {exc}")


def serves_again(stack: Stack, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if all(
            httpx.post(
                f"{stack.url}{path}",  # type: ignore[attr-defined]
                json={**extra, "messages": [{"role": "user", "content": "hi"}]},
                timeout=5,
            ).status_code
            == 200
            for name, path, extra, _ in CALLS
            if name != "forbidden"
        ):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"the gateway did not serve every route again within {within}s")


def test_kill_a_worker_then_authz_then_freeze_extproc_under_load(stack: Stack) -> None:
    stop, tally = threading.Event(), Tally()
    threads = [threading.Thread(target=client, args=(stack, stop, tally, n)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        os.kill(stack.procs["extproc-1"].pid, signal.SIGKILL)
        time.sleep(1.5)
        os.kill(stack.procs["authz"].pid, signal.SIGKILL)
        time.sleep(1.5)
        frozen = stack.procs["extproc"].pid
        os.kill(frozen, signal.SIGSTOP)
        time.sleep(1.5)
        os.kill(frozen, signal.SIGCONT)
        recovered = serves_again(stack, within=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not tally.problems, tally.problems[:10]
    assert recovered < 10
    served = sum(n for (name, status), n in tally.statuses.items() if status == 200)
    failed_closed = sum(n for (name, status), n in tally.statuses.items() if status == 503)
    assert served > 50 and failed_closed > 0, tally.statuses  # the faults were felt, and survived
    assert {status for (name, status) in tally.statuses if name == "forbidden"} <= {403, 503}
