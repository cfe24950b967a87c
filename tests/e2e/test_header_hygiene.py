"""Headers a client must not be able to use: Envoy's ``x-envoy-*`` controls and the gateway's ``x-gw-*``.

Envoy honours ``x-envoy-upstream-rq-timeout-ms``, ``x-envoy-retry-on``, ``x-envoy-max-retries`` and
friends from any request it classifies as internal. Envoy 1.40 trusts no address unless told to, but
a deployment behind a load balancer on a private network is told to (``use_remote_address`` with
internal CIDRs), and then any client there could cut the gateway's timeouts, multiply its calls to a
paid provider, or switch failover off. So both prefixes are removed before Envoy looks at the request,
whatever it thinks of the client: each test runs against the bootstrap as rendered and against one
patched to trust loopback clients as internal.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    Gateway,
    Mock,
    failover_route,
    http_connection_managers,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

HELLO = {"messages": [{"role": "user", "content": "hi"}]}


def trust_loopback(bootstrap: dict) -> None:
    """What an operator behind a trusted proxy configures: loopback peers are internal."""
    for hcm in http_connection_managers(bootstrap):
        hcm["use_remote_address"] = True
        hcm["internal_address_config"] = {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]}


@pytest.fixture(scope="module", params=["as-rendered", "trusting-loopback"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    good, m429 = start_mock(), start_mock("--force-status", "429")
    mocks: list[Mock] = [good, m429]
    host = f"127.0.0.1:{good.port}"
    routes = [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        failover_route("failover", "/failover", f"127.0.0.1:{m429.port}", host),
        # Both groups answer (slowly, when asked to): a per-try timeout would fail both.
        failover_route("slow-failover", "/slow-failover", host, host),
    ]
    patch = trust_loopback if request.param == "trusting-loopback" else None
    tmp = tmp_path_factory.mktemp("hygiene")
    with running(mocks, lambda: launch(tmp, listener_config(routes), good, envoy_patch=patch)) as gateway:
        yield gateway


def post(gw: Gateway, path: str, **headers: str) -> httpx.Response:
    # No model: each provider uses its own (so the failover routes answer from the secondary's gpt-4o).
    body = {"model": "gpt-4o", **HELLO} if path.startswith("/openai") else HELLO
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=20)


def test_client_cannot_shorten_the_request_timeout(gw: Gateway) -> None:
    resp = post(
        gw,
        "/openai/v1/chat/completions",
        **{"x-mock-delay-ms": "400", "x-envoy-upstream-rq-timeout-ms": "50"},
    )
    assert resp.status_code == 200, resp.text


def test_client_cannot_set_a_per_try_timeout(gw: Gateway) -> None:
    resp = post(
        gw,
        "/slow-failover/v1/chat/completions",
        **{"x-mock-delay-ms": "400", "x-envoy-upstream-rq-per-try-timeout-ms": "50"},
    )
    assert resp.status_code == 200, resp.text


def test_client_cannot_add_retries(gw: Gateway) -> None:
    gw.mock.clear()
    resp = post(
        gw,
        "/openai/v1/chat/completions",
        **{
            "x-mock-status": "500",
            "x-envoy-retry-on": "5xx,retriable-status-codes,reset,connect-failure",
            "x-envoy-retriable-status-codes": "500",
            "x-envoy-max-retries": "5",
        },
    )
    assert resp.status_code == 500, resp.text
    assert len(gw.mock.requests()) == 1  # one call to the provider, not six


def test_client_cannot_switch_failover_off(gw: Gateway) -> None:
    resp = post(gw, "/failover/v1/chat/completions", **{"x-envoy-max-retries": "0"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "gpt-4o"  # the secondary answered


def test_envoy_and_gateway_prefixes_never_reach_the_provider(gw: Gateway) -> None:
    gw.mock.clear()
    spoofed = {
        "x-envoy-internal": "spoofed",
        "x-envoy-decorator-operation": "spoofed",
        "x-envoy-some-future-header": "1",
        "x-gw-user": "root",
        "X-GW-Tenant": "other-tenant",
        "x-gw-a-name-no-list-knows": "1",
    }
    for path in ("/openai/v1/chat/completions", "/failover/v1/chat/completions"):
        assert post(gw, path, **spoofed).status_code == 200
    seen = gw.mock.requests()
    assert seen
    # Envoy marks a request it trusts as internal itself (the trusting-loopback variant): its own header.
    envoys_own = {("x-envoy-internal", "true")}
    for request in seen:
        leaked = {
            k: v
            for k, v in request["headers"].items()
            if k.startswith(("x-envoy-", "x-gw-")) and (k, v) not in envoys_own
        }
        assert not leaked, leaked
