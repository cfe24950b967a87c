"""Config fields that used to load and do nothing, now acting through the real Envoy.

``backendTLS.insecureSkipVerify``, ``urlRewrite.authority`` and a listener's ``hostname``; route ids
that survive a reload in which the routes moved; ext_authz only where a route asks for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    OPENAI_KEY,
    Gateway,
    launch,
    listener_config,
    provider_route,
    restart_extproc,
    start_mock,
    start_tls_mock,
)

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def chat(gw: Gateway, path: str, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, json=CHAT, headers=headers, timeout=15)


# --- TLS to the provider ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("tls")
    mock = start_tls_mock(tmp)
    host = f"127.0.0.1:{mock.port}"
    routes = [
        provider_route(
            "skip-verify", "/skip", {"openAI": {}}, host, OPENAI_KEY, backendTLS={"insecureSkipVerify": True}
        ),
        provider_route("verify", "/verify", {"openAI": {}}, host, OPENAI_KEY, backendTLS={}),
    ]
    try:
        gw = launch(tmp, listener_config(routes), mock)
    except BaseException:
        mock.proc.terminate()
        raise
    yield gw
    gw.stack.stop()
    mock.proc.terminate()
    mock.proc.wait(timeout=5)


def test_insecure_skip_verify_reaches_a_self_signed_provider(tls_gw: Gateway) -> None:
    tls_gw.mock.clear()
    resp = chat(tls_gw, "/skip/v1/chat/completions")
    assert resp.status_code == 200, resp.text
    assert [r["path"] for r in tls_gw.mock.requests()] == ["/v1/chat/completions"]


def test_certificates_are_verified_by_default(tls_gw: Gateway) -> None:
    tls_gw.mock.clear()
    resp = chat(tls_gw, "/verify/v1/chat/completions")
    assert resp.status_code == 503, resp.text  # the handshake fails: no request reaches the provider
    assert resp.json()["error"]["type"]
    assert tls_gw.mock.requests() == []


# --- host rewrite, virtual hosts, ids, authz ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    config = listener_config(
        [
            provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
            provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, "sk-ant-x"),
            provider_route(
                "rewritten",
                "/rewritten",
                {"openAI": {}},
                host,
                OPENAI_KEY,
                urlRewrite={"authority": {"full": "llm.internal.example:8443"}},
            ),
            provider_route(
                "rewritten-host",
                "/rewritten-host",
                {"openAI": {}},
                host,
                OPENAI_KEY,
                urlRewrite={"authority": {"host": "llm.internal.example"}},
            ),
        ]
    )
    config["binds"][0]["listeners"] += [
        {
            "hostname": "api.example.com",
            "routes": [provider_route("api", "/", {"openAI": {}}, host, OPENAI_KEY)],
        },
        {
            "hostname": "*.tenants.example.com",
            "routes": [provider_route("tenants", "/", {"anthropic": {}}, host, "sk-ant-x")],
        },
    ]
    try:
        gateway = launch(tmp_path_factory.mktemp("fields"), config, mock)
    except BaseException:
        mock.proc.terminate()
        raise
    yield gateway
    gateway.stack.stop()
    mock.proc.terminate()
    mock.proc.wait(timeout=5)


@pytest.mark.parametrize(
    ("prefix", "authority"),
    [("/rewritten", "llm.internal.example:8443"), ("/rewritten-host", "llm.internal.example")],
)
def test_url_rewrite_authority_is_the_host_the_provider_sees(
    gw: Gateway, prefix: str, authority: str
) -> None:
    gw.mock.clear()
    assert chat(gw, f"{prefix}/v1/chat/completions").status_code == 200
    (seen,) = gw.mock.requests()
    assert seen["headers"]["host"] == authority


def test_without_a_rewrite_the_provider_sees_its_own_host(gw: Gateway) -> None:
    gw.mock.clear()
    assert chat(gw, "/openai/v1/chat/completions").status_code == 200
    (seen,) = gw.mock.requests()
    assert seen["headers"]["host"] == f"127.0.0.1:{gw.mock.port}"


@pytest.mark.parametrize(
    ("host", "provider_path"),
    [
        ("api.example.com", "/v1/chat/completions"),
        ("api.example.com:3000", "/v1/chat/completions"),  # a port in Host does not change the match
        ("eu.tenants.example.com", "/v1/messages"),
    ],
)
def test_listener_hostname_selects_the_routes(gw: Gateway, host: str, provider_path: str) -> None:
    gw.mock.clear()
    resp = chat(gw, "/v1/chat/completions", host=host)
    assert resp.status_code == 200, resp.text
    assert [r["path"] for r in gw.mock.requests()] == [provider_path]


def test_listener_without_hostname_serves_other_hosts(gw: Gateway) -> None:
    gw.mock.clear()
    resp = chat(gw, "/openai/v1/chat/completions", host="elsewhere.example.org")
    assert resp.status_code == 200, resp.text
    # ...but not the routes of a listener that names another host.
    resp = chat(gw, "/v1/chat/completions", host="elsewhere.example.org")
    assert resp.status_code == 404, resp.text


def test_authz_is_not_called_on_routes_without_an_auth_policy(tmp_path: Path) -> None:
    """No route has an auth policy yet: with authz down, requests still pass; readiness still tells."""
    mock = start_mock()
    try:
        own = launch(
            tmp_path,
            listener_config(
                [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
            ),
            mock,
        )
        try:
            own.stack.stop_one("authz")
            resp = chat(own, "/openai/v1/chat/completions")
            assert resp.status_code == 200, resp.text
            deadline = time.monotonic() + 10
            while httpx.get(own.readiness_url).status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert httpx.get(own.readiness_url).status_code == 503
        finally:
            own.stack.stop()
    finally:
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def test_route_ids_survive_a_reload_that_moves_routes(tmp_path: Path) -> None:
    """Envoy and the sidecar briefly run different configs during a reload: a route name must mean the
    same route to both, or a request for one route is translated for another."""
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    openai_route = provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY)
    anthropic_route = provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, "sk-ant-x")
    config = listener_config([openai_route, anthropic_route])
    try:
        own = launch(tmp_path, config, mock)
        try:
            reordered = {**config, "binds": [{**config["binds"][0], "listeners": [
                {"routes": [anthropic_route, openai_route]}
            ]}]}  # fmt: skip
            restart_extproc(own, reordered, tmp_path)
            for prefix, provider_path in [
                ("/openai", "/v1/chat/completions"),
                ("/anthropic", "/v1/messages"),
            ]:
                mock.clear()
                deadline = time.monotonic() + 10
                resp = chat(own, f"{prefix}/v1/chat/completions")
                while resp.status_code == 503 and time.monotonic() < deadline:  # Envoy reconnecting
                    time.sleep(0.2)
                    resp = chat(own, f"{prefix}/v1/chat/completions")
                assert resp.status_code == 200, resp.text
                assert [r["path"] for r in mock.requests()] == [provider_path], prefix
        finally:
            own.stack.stop()
    finally:
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def test_a_route_the_sidecar_no_longer_has_is_a_404_not_another_route(tmp_path: Path) -> None:
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    config = listener_config(
        [
            provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
            provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, "sk-ant-x"),
        ]
    )
    try:
        own = launch(tmp_path, config, mock)
        try:
            without_openai = {**config, "binds": [{**config["binds"][0], "listeners": [
                {"routes": [provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, "sk-ant-x")]}
            ]}]}  # fmt: skip
            restart_extproc(own, without_openai, tmp_path)
            mock.clear()
            deadline = time.monotonic() + 10
            resp = chat(own, "/openai/v1/chat/completions")
            while resp.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
                resp = chat(own, "/openai/v1/chat/completions")
            assert resp.status_code == 404, resp.text
            assert mock.requests() == []
        finally:
            own.stack.stop()
    finally:
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
