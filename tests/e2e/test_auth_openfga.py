"""The openfga policy through the real Envoy and authz sidecar, against a server speaking
OpenFGA's HTTP Check API (tests/fga_server.py) with the shipped model and example tuples.

Callers here are anonymous (identity is other tests' subject), so the routes ask about everyone
(``user: "user:*"``, the model's public access); per-user and per-group decisions are in
tests/unit/test_openfga.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    MOCK_CONTROLS,
    OPENAI_KEY,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)
from tests.fga_server import STORE_ID, FgaServer, RunningFga, example_tuples

OTHER_STORE = "01HVMMBCMGZNT3SED4Z17ECXCZ"


def listing_route(host: str, openfga: dict) -> dict:
    """Three providers, each naming its model: what GET /v1/models lists before filtering."""
    providers = [
        {
            "name": m,
            "provider": {"openAI": {"model": m}},
            "hostOverride": host,
            "backendAuth": {"key": OPENAI_KEY},
        }
        for m in ("gpt-4o-mini", "gpt-4o", "o1")
    ]
    return {
        "name": "fga-list",
        "matches": [{"path": {"pathPrefix": "/fga-list"}}],
        "backends": [{"ai": {"groups": [{"providers": providers}]}}],
        "policies": {"ai": MOCK_CONTROLS, "openfga": openfga},
    }


def routes(host: str, fga_url: str) -> list[dict]:
    everyone = {"url": fga_url, "storeId": STORE_ID, "user": "user:*", "timeout": "500ms"}
    return [
        provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("fga", "/fga", {"openAI": {}}, host, OPENAI_KEY, openfga=everyone),
        # The default user template needs a subject: an anonymous caller has none.
        provider_route(
            "fga-users",
            "/fga-users",
            {"openAI": {}},
            host,
            OPENAI_KEY,
            openfga={"url": fga_url, "storeId": STORE_ID},
        ),
        provider_route(
            "fga-store",
            "/fga-store",
            {"openAI": {}},
            host,
            OPENAI_KEY,
            openfga={**everyone, "storeId": OTHER_STORE},
        ),
        provider_route(
            "fga-nocache",
            "/fga-nocache",
            {"anthropic": {}},
            host,
            OPENAI_KEY,
            openfga={**everyone, "cacheTtl": "0s"},
        ),
        listing_route(host, {**everyone, "cacheTtl": "0s"}),
    ]


@pytest.fixture(scope="module")
def fga() -> Iterator[RunningFga]:
    server = RunningFga(FgaServer(tuples=example_tuples()))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fga: RunningFga) -> Iterator[Gateway]:
    mock = start_mock()
    config = listener_config(routes(f"127.0.0.1:{mock.port}", fga.url), sidecarTimeout="2s")
    with running([mock], lambda: launch(tmp_path_factory.mktemp("auth-openfga"), config, mock)) as gateway:
        yield gateway


def chat(gw: Gateway, prefix: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=body, timeout=20)


def messages(gw: Gateway, prefix: str, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/messages", json=body, timeout=20)


def test_a_model_granted_to_everyone_passes(gw: Gateway, fga: RunningFga) -> None:
    fga.server.checks.clear()
    resp = chat(gw, "/fga", "gpt-4o-mini")
    assert resp.status_code == 200, resp.text
    assert fga.server.checks[-1]["tuple_key"] == {
        "user": "user:*",
        "relation": "can_use",
        "object": "llm_model:gpt-4o-mini",
    }


def test_a_model_not_granted_is_403_naming_it(gw: Gateway) -> None:
    resp = chat(gw, "/fga", "gpt-4o")
    assert resp.status_code == 403, resp.text
    err = resp.json()["error"]
    assert err["code"] == "model_not_allowed" and "'gpt-4o'" in err["message"]
    assert resp.headers["content-type"] == "application/json"


def test_an_anonymous_caller_is_403_where_the_check_needs_a_user(gw: Gateway, fga: RunningFga) -> None:
    before = len(fga.server.checks)
    resp = chat(gw, "/fga-users", "gpt-4o-mini")
    assert resp.status_code == 403, resp.text
    assert len(fga.server.checks) == before  # nobody to ask about: no check sent


def test_a_wrong_store_fails_closed(gw: Gateway) -> None:
    resp = chat(gw, "/fga-store", "gpt-4o-mini")
    assert resp.status_code == 503, resp.text
    assert "unavailable" in resp.json()["error"]["message"]


def test_the_models_listing_is_filtered(gw: Gateway) -> None:
    resp = httpx.get(f"{gw.url}/fga-list/v1/models", timeout=20)
    assert resp.status_code == 200, resp.text
    assert [m["id"] for m in resp.json()["data"]] == ["gpt-4o-mini"]


def test_openfga_down_fails_closed_as_json(gw: Gateway, fga: RunningFga) -> None:
    # Last in this module: it stops the OpenFGA server for good.
    assert messages(gw, "/fga-nocache", "gpt-4o-mini").status_code == 200
    fga.stop()
    assert chat(gw, "/open", "gpt-4o").status_code == 200  # open routes never ask
    resp = messages(gw, "/fga-nocache", "gpt-4o-mini")
    assert resp.status_code == 503, resp.text
    assert resp.json()["type"] == "error"  # the Anthropic client's error shape
    assert resp.headers["content-type"] == "application/json"
    listing = httpx.get(f"{gw.url}/fga-list/v1/models", timeout=20)
    assert listing.status_code == 503, listing.text  # never an unfiltered list
