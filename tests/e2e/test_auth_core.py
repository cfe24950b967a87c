"""The authz seam through the real Envoy: a route with an auth policy is checked (its body
included), refusals are the client API's JSON, open routes are not checked, and a down authz
sidecar is a JSON 503 on checked routes only (fail closed)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)


def routes(host: str) -> list[dict]:
    # modelAccess alone: everyone is anonymous, and anonymous callers get the default list.
    access = {"modelAccess": {"default": ["gpt-4o-mini", "claude-*"]}}
    aliased = {**access, "ai": {"modelAliases": {"fast": "gpt-4o"}}}
    return [
        provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
        provider_route(
            "limited", "/limited", {"openAI": {"model": "gpt-4o-mini"}}, host, OPENAI_KEY, **access
        ),
        provider_route("any-model", "/any", {"openAI": {}}, host, OPENAI_KEY, **access),
        provider_route("aliased", "/aliased", {"openAI": {}}, host, OPENAI_KEY, **aliased),
        provider_route("messages", "/anthropic", {"anthropic": {}}, host, OPENAI_KEY, **access),
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock = start_mock()
    config = listener_config(routes(f"127.0.0.1:{mock.port}"), sidecarTimeout="2s")
    with running([mock], lambda: launch(tmp_path_factory.mktemp("auth-core"), config, mock)) as gateway:
        yield gateway


def chat(gw: Gateway, prefix: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=body, timeout=20)


def test_an_allowed_model_passes(gw: Gateway) -> None:
    resp = chat(gw, "/any", "gpt-4o-mini")
    assert resp.status_code == 200, resp.text


def test_a_model_outside_the_entitlement_is_403_in_openai_shape(gw: Gateway) -> None:
    resp = chat(gw, "/any", "gpt-4o")
    assert resp.status_code == 403, resp.text
    err = resp.json()["error"]
    assert err["code"] == "model_not_allowed"
    assert "gpt-4o" in err["message"]
    assert resp.headers["content-type"] == "application/json"


def test_an_alias_cannot_reach_a_model_the_caller_may_not_use(gw: Gateway) -> None:
    resp = chat(gw, "/aliased", "fast")
    assert resp.status_code == 403, resp.text
    assert "'gpt-4o'" in resp.json()["error"]["message"]


def test_messages_clients_get_anthropic_errors(gw: Gateway) -> None:
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{gw.url}/anthropic/v1/messages", json=body, timeout=20)
    assert resp.status_code == 403, resp.text
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "permission_error"


def test_the_models_listing_is_filtered(gw: Gateway) -> None:
    open_ids = [m["id"] for m in httpx.get(f"{gw.url}/limited/v1/models", timeout=20).json()["data"]]
    assert open_ids == ["gpt-4o-mini"]


def test_authz_down_fails_closed_on_checked_routes_only(gw: Gateway) -> None:
    # Last in this module: it stops the authz sidecar for good.
    gw.stack.stop_one("authz")
    assert chat(gw, "/open", "gpt-4o").status_code == 200  # open routes never call authz
    resp = chat(gw, "/any", "gpt-4o-mini")
    assert resp.status_code == 503, resp.text
    assert "unavailable" in resp.json()["error"]["message"]
