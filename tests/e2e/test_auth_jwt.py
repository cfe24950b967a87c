"""jwtAuth through the real Envoy, with tokens in Keycloak's shape and the JWKS served over HTTP
by a fake Keycloak: valid tokens pass with the identity in the usage record, each mode, key
rotation without restart, every bad token is a 401 with WWW-Authenticate in the client's error
JSON, the IdP down, and the gateway keeps serving valid requests after all of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extproc.ports import free_port
from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    ROOT,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)
from tests.e2e.test_pipeline import usage_record
from tests.keycloak_fake import (
    AUDIENCE,
    FakeKeycloak,
    SigningKey,
    claims,
    ec_key,
    encryption_jwk,
    hs256_with_public_key,
    rsa_key,
    sign,
    unsigned,
)

RSA1 = rsa_key("kc-rsa-1")
RSA2 = rsa_key("kc-rsa-2")  # the key the IdP rotates to
EC1 = ec_key("kc-ec-1")
STRANGER = rsa_key("kc-rsa-1")  # the same kid, someone else's key
ISSUED_ELSEWHERE = rsa_key("kc-rsa-9")  # a kid no realm publishes


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeKeycloak]:
    fake = FakeKeycloak()
    fake.serve("mcp-realm", RSA1, EC1, extra=[encryption_jwk()])
    fake.serve("rotating", RSA1)
    fake.serve("flaky", RSA1)
    yield fake
    fake.close()


def jwt_policy(idp: FakeKeycloak, realm: str = "mcp-realm", **extra: Any) -> dict[str, Any]:
    jwks: dict[str, Any] = {"url": idp.certs_url(realm)}
    if "cacheDuration" in extra:
        jwks["cacheDuration"] = extra.pop("cacheDuration")
    return {"issuer": idp.issuer(realm), "audiences": [AUDIENCE], "jwks": jwks, **extra}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, idp: FakeKeycloak) -> Iterator[Gateway]:
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    nowhere = f"http://127.0.0.1:{free_port()}/realms/gone/protocol/openid-connect/certs"

    def route(name: str, provider: dict, key: str, policy: dict) -> dict:
        return provider_route(name, f"/{name}", provider, host, key, jwtAuth=policy)

    routes = [
        route("sso", {"openAI": {}}, OPENAI_KEY, jwt_policy(idp)),
        route("sso-anthropic", {"anthropic": {}}, ANTHROPIC_KEY, jwt_policy(idp)),
        route("optional", {"openAI": {}}, OPENAI_KEY, jwt_policy(idp, mode="optional")),
        route("permissive", {"openAI": {}}, OPENAI_KEY, jwt_policy(idp, mode="permissive")),
        route("rotating", {"openAI": {}}, OPENAI_KEY, jwt_policy(idp, "rotating", cacheDuration="2s")),
        route("flaky", {"openAI": {}}, OPENAI_KEY, jwt_policy(idp, "flaky")),
        route(
            "nokeys",
            {"openAI": {}},
            OPENAI_KEY,
            {"issuer": "http://127.0.0.1/realms/gone", "jwks": {"url": nowhere}},
        ),
        provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
    ]
    config = listener_config(routes, sidecarTimeout="5s")
    with running([mock], lambda: launch(tmp_path_factory.mktemp("auth-jwt"), config, mock)) as gateway:
        yield gateway


def chat(gw: Gateway, prefix: str, token: str | None, model: str = "gpt-4o-mini") -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}/{prefix}/v1/chat/completions", json=body, headers=headers, timeout=20)


def token(idp: FakeKeycloak, key: SigningKey = RSA1, realm: str = "mcp-realm", **over: Any) -> str:
    username = over.pop("username", "alice")
    groups = over.pop("groups", ["/engineering"])
    return sign(key, claims(idp.issuer(realm), username, groups=groups, **over))


def assert_401(resp: httpx.Response, reason: str | None = None) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith('Bearer realm="llm-gateway"')
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert err["type"] and err["message"]
    if reason is not None:
        assert reason in err["message"], err["message"]


# --- valid tokens ---------------------------------------------------------------------------------


def test_a_keycloak_token_passes_and_the_usage_record_names_the_caller(
    gw: Gateway, idp: FakeKeycloak
) -> None:
    body = claims(idp.issuer(), "alice", groups=["/engineering"])
    resp = chat(gw, "sso", sign(RSA1, body))
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["user_id"] == body["sub"]
    assert record["group_id"] == "engineering"


def test_an_ec_signed_token_passes(gw: Gateway, idp: FakeKeycloak) -> None:
    resp = chat(gw, "sso", token(idp, EC1, username="bob", groups=["/marketing"]))
    assert resp.status_code == 200, resp.text
    assert usage_record(gw, resp.headers["x-gateway-request-id"])["group_id"] == "marketing"


def test_the_token_never_reaches_the_provider(gw: Gateway, idp: FakeKeycloak) -> None:
    gw.mock.clear()
    tok = token(idp)
    assert chat(gw, "sso", tok).status_code == 200
    sent = gw.mock.requests()[-1]["headers"]
    assert tok not in " ".join(sent.values())
    assert sent["authorization"] == f"Bearer {OPENAI_KEY}"


# --- modes ---------------------------------------------------------------------------------------


def test_strict_without_a_token_is_401(gw: Gateway) -> None:
    assert_401(chat(gw, "sso", None), "needs credentials")


def test_optional_mode(gw: Gateway, idp: FakeKeycloak) -> None:
    assert chat(gw, "optional", None).status_code == 200
    assert chat(gw, "optional", token(idp)).status_code == 200
    assert_401(chat(gw, "optional", token(idp, STRANGER)), "signature")


def test_permissive_mode_takes_bad_tokens_as_anonymous(gw: Gateway, idp: FakeKeycloak) -> None:
    anon = chat(gw, "permissive", token(idp, STRANGER))
    assert anon.status_code == 200, anon.text
    assert usage_record(gw, anon.headers["x-gateway-request-id"])["user_id"] is None
    known = chat(gw, "permissive", token(idp, username="dave"))
    assert known.status_code == 200
    assert usage_record(gw, known.headers["x-gateway-request-id"])["user_id"] is not None
    assert chat(gw, "permissive", None).status_code == 200


# --- bad input -----------------------------------------------------------------------------------


def _bad_tokens(idp: FakeKeycloak) -> dict[str, tuple[Callable[[], str], str]]:
    iss = idp.issuer()
    now = int(time.time())
    return {
        "malformed": (lambda: token(idp).split(".")[0] + ".bm90LWpzb24.c2ln", "not a well-formed JWT"),
        "wrong signature": (lambda: token(idp, STRANGER), "signature is invalid"),
        "alg none": (lambda: unsigned(claims(iss), kid=RSA1.kid), "'none' is not allowed"),
        "HS256 keyed with the RSA public key": (lambda: hs256_with_public_key(RSA1, claims(iss)), "'HS256'"),
        "expired": (lambda: sign(RSA1, claims(iss, exp=now - 3600, iat=now - 7200)), "expired"),
        "not yet valid": (lambda: sign(RSA1, claims(iss, nbf=now + 3600)), "not valid yet"),
        "wrong issuer": (lambda: sign(RSA1, claims("http://evil.test/realms/mcp-realm")), "issuer"),
        "wrong audience": (lambda: sign(RSA1, claims(iss, aud=["another-client"])), "audience"),
        "unknown kid": (lambda: token(idp, ISSUED_ELSEWHERE), "signing key (kid) is unknown"),
        "oversized": (lambda: sign(RSA1, claims(iss, padding="x" * 20_000)), "larger than"),
    }


BAD = [  # the issue's bad-input list, as far as it is about tokens
    "malformed",
    "wrong signature",
    "alg none",
    "HS256 keyed with the RSA public key",
    "expired",
    "not yet valid",
    "wrong issuer",
    "wrong audience",
    "unknown kid",
    "oversized",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_tokens_are_401_and_the_gateway_keeps_serving(gw: Gateway, idp: FakeKeycloak, case: str) -> None:
    make, reason = _bad_tokens(idp)[case]
    assert_401(chat(gw, "sso", make()), reason)
    assert chat(gw, "sso", token(idp)).status_code == 200


def test_anthropic_clients_get_anthropic_401s(gw: Gateway, idp: FakeKeycloak) -> None:
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    url = f"{gw.url}/sso-anthropic/v1/messages"
    resp = httpx.post(url, json=body, headers={"authorization": f"Bearer {token(idp, STRANGER)}"}, timeout=20)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith("Bearer ")
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "authentication_error"
    assert "signature" in resp.json()["error"]["message"]
    ok = httpx.post(url, json=body, headers={"authorization": f"Bearer {token(idp)}"}, timeout=20)
    assert ok.status_code == 200, ok.text


# --- the key set ---------------------------------------------------------------------------------


def test_rotation_without_restart(gw: Gateway, idp: FakeKeycloak) -> None:
    old = token(idp, RSA1, "rotating")  # one token, used throughout, as a client would
    assert chat(gw, "rotating", old).status_code == 200
    idp.serve("rotating", RSA1, RSA2)  # the IdP adds its next key
    assert chat(gw, "rotating", token(idp, RSA2, "rotating")).status_code == 200
    assert chat(gw, "rotating", old).status_code == 200  # still served
    idp.serve("rotating", RSA2)  # and retires the old one: gone once the 2s cache is refreshed
    deadline = time.monotonic() + 15
    while chat(gw, "rotating", old).status_code == 200:
        assert time.monotonic() < deadline, "the retired key was still accepted"
        time.sleep(0.5)
    assert_401(chat(gw, "rotating", old), "unknown")
    assert chat(gw, "rotating", token(idp, RSA2, "rotating")).status_code == 200


def test_idp_down_keeps_cached_keys_and_an_unknown_kid_is_401(gw: Gateway, idp: FakeKeycloak) -> None:
    assert chat(gw, "flaky", token(idp, RSA1, "flaky")).status_code == 200
    idp.realm("flaky").down = True
    try:
        hits = idp.realm("flaky").hits
        assert_401(chat(gw, "flaky", token(idp, RSA2, "flaky")), "unknown")
        assert idp.realm("flaky").hits > hits  # it did ask the IdP for the new kid (aiohttp retries once)
        assert chat(gw, "flaky", token(idp, RSA1, "flaky")).status_code == 200
    finally:
        idp.realm("flaky").down = False


def test_no_keys_ever_loaded_is_503(gw: Gateway, idp: FakeKeycloak) -> None:
    tok = sign(RSA1, claims("http://127.0.0.1/realms/gone", aud=None))
    resp = chat(gw, "nokeys", tok)
    assert resp.status_code == 503, resp.text
    assert "unavailable" in resp.json()["error"]["message"]


def test_open_routes_ignore_tokens(gw: Gateway) -> None:
    assert chat(gw, "open", "not-even-a-jwt").status_code == 200


def test_the_shipped_sso_example_runs_the_seeds_flow(
    tmp_path: Path, idp: FakeKeycloak, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/keycloak/gateway-sso.yaml as shipped, with Keycloak's addresses from the environment
    as its comments say: /openai is 401 without a token, 200 with alice's."""
    mock = start_mock()
    text = (ROOT / "deploy" / "keycloak" / "gateway-sso.yaml").read_text()
    config = yaml.safe_load(text.replace("${MOCK_HOST:-127.0.0.1}:9100", f"127.0.0.1:{mock.port}"))
    config["binds"][0]["port"] = free_port()
    config["config"] = {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()}
    # The sidecars inherit the environment: Keycloak is the fake one here.
    monkeypatch.setenv("KEYCLOAK_URL", f"http://127.0.0.1:{idp.port}")
    monkeypatch.setenv("KEYCLOAK_ISSUER", idp.issuer())
    with running([mock], lambda: launch(tmp_path, config, mock)) as gw:
        assert_401(chat(gw, "openai", None), "needs credentials")
        resp = chat(gw, "openai", token(idp, username="alice"))
        assert resp.status_code == 200, resp.text
        record = usage_record(gw, resp.headers["x-gateway-request-id"])
        assert (record["user_id"], record["group_id"]) == ("alice", "engineering")
        assert chat(gw, "anthropic", None).status_code == 200  # open, as in the seed
