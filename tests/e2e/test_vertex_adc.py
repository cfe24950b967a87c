"""Vertex AI without a configured key: tokens from Application Default Credentials.

A real service-account key file (generated here) whose ``token_uri`` is the mock's
OAuth endpoint: google-auth signs a JWT assertion, trades it for an access token,
and the gateway sends that token to Vertex.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import Gateway, Mock, launch, listener_config, provider_route

PROJECT = "proj-adc"
MODEL = "gemini-2.5-flash"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def service_account_file(directory: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "key-1",
                "private_key": pem,
                "client_email": f"gateway@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )
    )
    return path


def vertex_config(mock: Mock) -> dict:
    vertex = {"vertex": {"projectId": PROJECT, "region": "us-east5"}}
    return listener_config([provider_route("vertex", "/vertex", vertex, f"127.0.0.1:{mock.port}", None)])


@pytest.fixture
def adc_gateway(
    tmp_path: Path, mocks: tuple[Mock, Mock, Mock], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    mock = mocks[0]
    creds = service_account_file(tmp_path, f"http://127.0.0.1:{mock.port}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(creds))
    gw = launch(tmp_path, vertex_config(mock), mock)
    yield gw
    gw.stack.stop()


def test_vertex_gets_a_token_from_application_default_credentials(adc_gateway: Gateway) -> None:
    adc_gateway.mock.clear()
    for _ in range(2):
        resp = httpx.post(f"{adc_gateway.url}/vertex/v1/chat/completions", json=CHAT, timeout=20)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"].startswith("Hello from mock vertex")
    seen = adc_gateway.mock.requests()
    assert [r["path"] for r in seen] == [
        "/token",  # one exchange: the token is cached until it nears expiry
        f"/v1/projects/{PROJECT}/locations/us-east5/publishers/google/models/{MODEL}:generateContent",
        f"/v1/projects/{PROJECT}/locations/us-east5/publishers/google/models/{MODEL}:generateContent",
    ]
    assert "jwt-bearer" in seen[0]["body"]
    assert seen[1]["headers"]["authorization"].startswith("Bearer ya29.mock-")
    assert seen[1]["headers"]["authorization"] == seen[2]["headers"]["authorization"]


def test_vertex_without_any_credentials_fails_closed(
    tmp_path: Path, mocks: tuple[Mock, Mock, Mock], monkeypatch: pytest.MonkeyPatch
) -> None:
    mock = mocks[0]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    gw = launch(tmp_path, vertex_config(mock), mock)
    try:
        mock.clear()
        resp = httpx.post(f"{gw.url}/vertex/v1/chat/completions", json=CHAT, timeout=20)
        assert resp.status_code == 500
        err = resp.json()["error"]
        assert err["code"] == "gateway_missing_credentials"
        assert "GOOGLE_APPLICATION_CREDENTIALS" in err["message"]
        assert mock.requests() == []  # nothing went to Vertex unauthenticated
    finally:
        gw.stack.stop()
