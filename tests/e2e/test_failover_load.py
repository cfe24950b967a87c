"""Failover through the real Envoy when the primary fails every request, at concurrency and for 529.

Envoy's default circuit breaker allows 3 concurrent retries per cluster: past that a retry is
dropped (``upstream_rq_retry_overflow``) and the client gets the primary's error. Failover is
the point of these routes, so it must hold at any concurrency the gateway serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Gateway,
    Mock,
    failover_route,
    launch,
    listener_config,
    running,
    start_mock,
)

CONCURRENCY = 60


def default_failover_route(name: str, prefix: str, primary: str, secondary: str, retry: dict | None) -> dict:
    """Anthropic first, OpenAI second, with the retry policy left to the gateway's defaults."""
    route = failover_route(name, prefix, primary, secondary)
    if retry is None:
        del route["policies"]
    else:
        route["policies"] = {"retry": retry}
    return route


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    good, m429, m529 = start_mock(), start_mock("--force-status", "429"), start_mock("--force-status", "529")
    mocks: list[Mock] = [good, m429, m529]
    host = f"127.0.0.1:{good.port}"
    routes = [
        failover_route("load-429", "/load/429", f"127.0.0.1:{m429.port}", host),
        # No retry policy at all: one attempt per provider group, the default retriable codes.
        default_failover_route("default-529", "/default/529", f"127.0.0.1:{m529.port}", host, None),
        # A retry policy that names no codes gets the same defaults.
        default_failover_route(
            "attempts-529", "/attempts/529", f"127.0.0.1:{m529.port}", host, {"attempts": 2}
        ),
    ]
    config = listener_config(routes, maxRequestBytes=1024 * 1024, sidecarTimeout="5s")
    with running(mocks, lambda: launch(tmp_path_factory.mktemp("failover-load"), config, good)) as gateway:
        yield gateway


async def _one(client: httpx.AsyncClient, url: str, stream: bool, n: int) -> tuple[int, str]:
    body = {"messages": [{"role": "user", "content": f"load {n}"}], "stream": stream}
    resp = await client.post(url, json=body)
    return resp.status_code, resp.text


async def _many(url: str, stream: bool, count: int) -> list[tuple[int, str]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(*(_one(client, url, stream, n) for n in range(count)))


def _assert_all_from_secondary(results: list[tuple[int, str]], stream: bool) -> None:
    failed = [(status, text[:200]) for status, text in results if status != 200]
    assert not failed, f"{len(failed)} of {len(results)} clients got the primary's error: {failed[:3]}"
    for _, text in results:
        assert '"gpt-4o"' in text, text[:300]  # the secondary's model
        if stream:
            assert text.rstrip().endswith("data: [DONE]"), text[-200:]


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streaming"])
def test_failover_holds_at_concurrency(gw: Gateway, stream: bool) -> None:
    results = asyncio.run(_many(gw.url + "/load/429/v1/chat/completions", stream, CONCURRENCY))
    _assert_all_from_secondary(results, stream)


def test_no_retry_overflow_in_envoy_stats(gw: Gateway) -> None:
    asyncio.run(_many(gw.url + "/load/429/v1/chat/completions", False, CONCURRENCY))
    admin = gw.config["config"]["adminPort"]
    stats = httpx.get(f"http://127.0.0.1:{admin}/stats", params={"filter": "retry_overflow"}).text
    overflow = [
        ln for ln in stats.splitlines() if "upstream_rq_retry_overflow" in ln and not ln.endswith(" 0")
    ]
    assert not overflow, overflow


@pytest.mark.parametrize("prefix", ["/default/529", "/attempts/529"])
@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streaming"])
def test_anthropic_529_overloaded_fails_over_by_default(gw: Gateway, prefix: str, stream: bool) -> None:
    gw.mock.clear()
    resp = httpx.post(
        gw.url + prefix + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "overloaded?"}], "stream": stream},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert '"gpt-4o"' in resp.text
    (seen,) = gw.mock.requests()  # the secondary answered, with its own key
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert ANTHROPIC_KEY not in str(seen["headers"])


def test_529_reaches_the_client_when_there_is_nothing_to_fail_over_to(tmp_path: Path) -> None:
    """The retriable codes do not hide the error: a route with one provider answers its 529."""
    m529 = start_mock("--force-status", "529")
    try:
        route = {
            "name": "only-anthropic",
            "matches": [{"path": {"pathPrefix": "/only"}}],
            "backends": [
                {
                    "ai": {
                        "name": "anthropic",
                        "provider": {"anthropic": {"model": "claude-3-5-haiku-latest"}},
                        "hostOverride": f"127.0.0.1:{m529.port}",
                    }
                }
            ],
            "policies": {"backendAuth": {"key": ANTHROPIC_KEY}},
        }
        gateway = launch(tmp_path, listener_config([route]), m529)
        try:
            resp = httpx.post(
                gateway.url + "/only/v1/messages",
                json={"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                timeout=15,
            )
            assert resp.status_code == 529, resp.text
            assert resp.json()["error"]["type"] == "overloaded_error"
        finally:
            gateway.stack.stop()
    finally:
        m529.proc.terminate()
        m529.proc.wait(timeout=5)
