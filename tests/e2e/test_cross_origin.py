"""A browser on another origin cannot spend the gateway's provider keys, through the real Envoy.

A page may POST cross-origin without asking first ("simple" requests: content-type text/plain,
form-urlencoded or multipart, or none at all); the browser hides the answer, but the provider
call would already be made and paid. The gateway's LLM APIs take only ``application/json``,
which no simple request can send: a browser must preflight it, and Envoy answers the preflight
per the route's ``cors`` policy (without one it is refused). So the requests below are what a
hostile page can make a browser send, written as httpx calls.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Gateway,
    gateway_with_own_mock,
    provider_route,
)

CHAT = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "spend my keys"}]}'
MESSAGES = b'{"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
EVIL = "https://evil.example"
APP = "https://app.example.com"
CORS = {
    "allowOrigins": [APP],
    "allowHeaders": ["content-type", "authorization"],
    "allowMethods": ["POST", "GET"],
    "maxAge": "10m",
}


def routes(host: str) -> list[dict]:
    return [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, ANTHROPIC_KEY),
        provider_route("cors", "/cors", {"openAI": {}}, host, OPENAI_KEY, cors=CORS),
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with_own_mock(tmp_path_factory.mktemp("cross-origin"), routes) as gateway:
        yield gateway


def post(gw: Gateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, content=body, headers=headers, timeout=20)


SIMPLE_CONTENT_TYPES = [
    "text/plain;charset=UTF-8",  # fetch() with a string body
    "application/x-www-form-urlencoded",  # a form
    "multipart/form-data; boundary=x",
    None,  # fetch() with an untyped Blob sends no content-type at all
]


@pytest.mark.parametrize("content_type", SIMPLE_CONTENT_TYPES, ids=str)
@pytest.mark.parametrize("prefix", ["/openai", "/cors"], ids=["no-cors-policy", "cors-policy"])
def test_a_simple_cross_origin_post_never_reaches_a_provider(
    gw: Gateway, prefix: str, content_type: str | None
) -> None:
    gw.mock.clear()
    headers = {"origin": EVIL, **({"content-type": content_type} if content_type else {})}
    resp = post(gw, f"{prefix}/v1/chat/completions", CHAT, **headers)
    assert resp.status_code == 415, resp.text
    err = resp.json()["error"]
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"], err
    assert "access-control-allow-origin" not in resp.headers
    assert gw.mock.requests() == []


def test_anthropic_clients_are_told_in_anthropic_shape(gw: Gateway) -> None:
    gw.mock.clear()
    resp = post(gw, "/anthropic/v1/messages", MESSAGES, origin=EVIL, **{"content-type": "text/plain"})
    assert resp.status_code == 415, resp.text
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert gw.mock.requests() == []


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8"])
def test_json_clients_pass(gw: Gateway, content_type: str) -> None:
    """What SDKs, curl with -H and server-side callers send (no Origin)."""
    resp = post(gw, "/openai/v1/chat/completions", CHAT, **{"content-type": content_type})
    assert resp.status_code == 200, resp.text


def preflight(gw: Gateway, prefix: str, origin: str) -> httpx.Response:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    return httpx.options(f"{gw.url}{prefix}/v1/chat/completions", headers=headers, timeout=20)


def test_preflights_are_answered_per_the_routes_policy(gw: Gateway) -> None:
    gw.mock.clear()
    granted = preflight(gw, "/cors", APP)
    assert granted.status_code == 200
    assert granted.headers["access-control-allow-origin"] == APP
    assert "POST" in granted.headers["access-control-allow-methods"]
    assert "content-type" in granted.headers["access-control-allow-headers"]
    # Another origin, or a route without a policy: no grant, so the browser sends no JSON POST.
    assert "access-control-allow-origin" not in preflight(gw, "/cors", EVIL).headers
    refused = preflight(gw, "/openai", EVIL)
    assert refused.status_code == 405 and "access-control-allow-origin" not in refused.headers
    assert gw.mock.requests() == []


def test_the_allowed_origin_posts_json(gw: Gateway) -> None:
    resp = post(gw, "/cors/v1/chat/completions", CHAT, origin=APP, **{"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == APP
