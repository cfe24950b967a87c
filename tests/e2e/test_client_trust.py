"""What the gateway believes of a client's own headers, through the real Envoy: neither its
x-request-id nor its X-Forwarded-For, and nothing it sends can plant a field in the access log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    Gateway,
    access_log_entry,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@contextmanager
def own_gateway(tmp: Path, **config: object) -> Iterator[Gateway]:
    mock = start_mock()
    gw_config = listener_config(
        [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
    )
    gw_config["config"].update(config)
    with running([mock], lambda: launch(tmp, gw_config, mock)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with own_gateway(tmp_path_factory.mktemp("client-trust")) as gateway:
        yield gateway


def chat(gw: Gateway, **headers: str) -> httpx.Response:
    resp = httpx.post(f"{gw.url}/openai/v1/chat/completions", json=CHAT, headers=headers, timeout=20)
    assert resp.status_code == 200, resp.text
    return resp


def test_envoy_makes_its_own_request_id_and_keeps_the_clients_apart(gw: Gateway) -> None:
    gw.mock.clear()
    resp = chat(gw, **{"x-request-id": "client-chosen-0001"})
    (seen,) = gw.mock.requests()
    # The provider sees Envoy's id, never one a client picked (Envoy traces and hashes by it).
    assert seen["headers"]["x-request-id"] != "client-chosen-0001"
    entry = access_log_entry(gw, lambda e: e["id"] == resp.headers["x-gateway-request-id"])
    assert entry["client_id"] == "client-chosen-0001"
    assert entry["envoy_id"] == seen["headers"]["x-request-id"]


def test_a_clients_x_forwarded_for_is_not_its_address(gw: Gateway) -> None:
    gw.mock.clear()
    resp = chat(gw, **{"x-forwarded-for": "203.0.113.7"})
    entry = access_log_entry(gw, lambda e: e["id"] == resp.headers["x-gateway-request-id"])
    assert entry["client"] == "127.0.0.1", entry
    (seen,) = gw.mock.requests()
    assert "x-forwarded-for" not in seen["headers"]  # nor is it passed on to a provider


def test_nothing_a_client_sends_plants_a_log_field(gw: Gateway) -> None:
    """Quotes, spaces and the log's own field names, in a header and in the path."""
    forged = 'x" status=200 id=forged route=admin "client":"10.0.0.1'
    resp = httpx.post(
        f'{gw.url}/openai/v1/chat/completions?q="id":"forged"',
        json=CHAT,
        headers={"x-request-id": forged},
        timeout=20,
    )
    assert resp.status_code == 200, resp.text
    entry = access_log_entry(gw, lambda e: e["client_id"] == forged)  # each line parses as JSON
    assert entry["id"] == resp.headers["x-gateway-request-id"]
    assert entry["client"] == "127.0.0.1" and entry["route"] == "openai"
    assert entry["path"].startswith("/openai/v1/chat/completions?q=")


def test_behind_trusted_proxies_the_address_comes_from_x_forwarded_for(tmp_path: Path) -> None:
    """``xffNumTrustedHops: 1``: one proxy in front, whose X-Forwarded-For entry is believed."""
    with own_gateway(tmp_path, xffNumTrustedHops=1) as gw:
        resp = chat(gw, **{"x-forwarded-for": "198.51.100.9, 203.0.113.7"})
        entry = access_log_entry(gw, lambda e: e["id"] == resp.headers["x-gateway-request-id"])
        # The rightmost entry is the trusted proxy's report of its client; what came before it
        # is the client's own word.
        assert entry["client"] == "203.0.113.7", entry
