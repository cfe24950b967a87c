"""The mechanisms together on one route, as the user stories use them: org API keys and SSO
tokens side by side, model entitlements by group, a CEL rule over the caller and the model,
the identity in the usage record, and identity headers a client sends itself ignored."""

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
from tests.e2e.test_auth_apikeys import KEYS_FILE, create, two_models
from tests.e2e.test_pipeline import usage_record
from tests.keycloak_fake import AUDIENCE, FakeKeycloak, claims, rsa_key, sign

KEY = rsa_key("combined-1")
SPOOF = {
    "x-gw-user": "admin",
    "x-gw-identity": "YWRtaW4=",
    "x-gw-tenant": "root",
    "x-user-id": "admin",
    "x-forwarded-user": "admin",
}


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeKeycloak]:
    fake = FakeKeycloak()
    fake.serve("mcp-realm", KEY)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, idp: FakeKeycloak) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("auth-combined")
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    policies = {
        "apiKey": {"file": KEYS_FILE},
        "jwtAuth": {"issuer": idp.issuer(), "audiences": [AUDIENCE], "jwks": {"url": idp.certs_url()}},
        "modelAccess": {"groups": {"engineering": ["gpt-*"], "marketing": ["gpt-4o-mini"]}},
        # Only engineering may stream (a CEL rule over the caller and the request).
        "authorization": {
            "rules": [
                {
                    "deny": "llm.streaming"
                    ' && !(has(jwt.groups) && "/engineering" in jwt.groups)'
                    ' && !(has(apiKey.groups) && "engineering" in apiKey.groups)'
                }
            ]
        },
    }
    routes = [
        two_models("governed", "/governed", host, **policies),
        provider_route("open", "/open", {"openAI": {}}, host, OPENAI_KEY),
    ]
    config = listener_config(routes, sidecarTimeout="3s")
    create(tmp, "--user", "svc-reports", "--group", "marketing", "--id", "reports-1")
    create(tmp, "--user", "svc-build", "--group", "engineering", "--id", "build-1")
    with running([mock], lambda: launch(tmp, config, mock)) as gateway:
        yield gateway


def _key(gw: Gateway, key_id: str) -> str:
    # The keys were made before the start; make a fresh one per test user instead of reading secrets back.
    _, key = create(
        gw.stack.workdir, "--user", key_id, "--group", key_id.split("-")[0], "--id", f"{key_id}-t"
    )
    return key


def chat(
    gw: Gateway,
    prefix: str,
    bearer: str | None,
    model: str = "gpt-4o-mini",
    stream: bool = False,
    **headers: str,
) -> httpx.Response:
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=body, headers=headers, timeout=20)


def token(idp: FakeKeycloak, user: str, group: str) -> str:
    return sign(KEY, claims(idp.issuer(), user, groups=[f"/{group}"]))


def eventually_ok(gw: Gateway, bearer: str) -> httpx.Response:
    import time

    deadline = time.monotonic() + 5
    while True:
        resp = chat(gw, "/governed", bearer)
        if resp.status_code != 401 or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_a_token_and_a_key_both_identify_their_caller(gw: Gateway, idp: FakeKeycloak) -> None:
    by_token = chat(gw, "/governed", token(idp, "alice", "engineering"), "gpt-4o")
    assert by_token.status_code == 200, by_token.text
    record = usage_record(gw, by_token.headers["x-gateway-request-id"])
    assert record["group_id"] == "engineering" and record["api_key_id"] is None and record["user_id"]

    by_key = eventually_ok(gw, _key(gw, "marketing-bot"))
    assert by_key.status_code == 200, by_key.text
    record = usage_record(gw, by_key.headers["x-gateway-request-id"])
    assert record["api_key_id"] == "marketing-bot-t" and record["user_id"] == "marketing-bot"
    assert record["group_id"] == "marketing"


def test_group_entitlements_apply_to_tokens_and_keys(gw: Gateway, idp: FakeKeycloak) -> None:
    assert chat(gw, "/governed", token(idp, "bob", "marketing"), "gpt-4o").status_code == 403
    assert chat(gw, "/governed", token(idp, "bob", "marketing"), "gpt-4o-mini").status_code == 200
    key = _key(gw, "marketing-svc")
    assert eventually_ok(gw, key).status_code == 200
    refused = chat(gw, "/governed", key, "gpt-4o")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_a_cel_rule_over_the_caller(gw: Gateway, idp: FakeKeycloak) -> None:
    assert chat(gw, "/governed", token(idp, "alice", "engineering"), stream=True).status_code == 200
    refused = chat(gw, "/governed", token(idp, "bob", "marketing"), stream=True)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    key = _key(gw, "engineering-bot")  # an engineering key may stream too
    assert eventually_ok(gw, key).status_code == 200
    assert chat(gw, "/governed", key, stream=True).status_code == 200


def test_the_listing_follows_the_callers_groups(gw: Gateway, idp: FakeKeycloak) -> None:
    def listed(bearer: str) -> list[str]:
        resp = httpx.get(
            f"{gw.url}/governed/v1/models", headers={"authorization": f"Bearer {bearer}"}, timeout=20
        )
        assert resp.status_code == 200, resp.text
        return sorted(m["id"] for m in resp.json()["data"])

    assert listed(token(idp, "alice", "engineering")) == ["gpt-4o", "gpt-4o-mini"]
    assert listed(token(idp, "bob", "marketing")) == ["gpt-4o-mini"]


def test_identity_headers_a_client_sends_are_ignored(gw: Gateway, idp: FakeKeycloak) -> None:
    # Without credentials, spoofed identity headers get no further than no headers at all.
    assert chat(gw, "/governed", None, **SPOOF).status_code == 401
    # With a token, the record names the token's caller, not the headers'.
    resp = chat(gw, "/governed", token(idp, "bob", "marketing"), **SPOOF)
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["group_id"] == "marketing" and record["user_id"] != "admin"
    # On an open route they make no identity at all, and none reaches the provider.
    gw.mock.clear()
    resp = chat(gw, "/open", None, **SPOOF)
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert record["user_id"] is None and record["api_key_id"] is None and record["group_id"] is None
    (sent,) = gw.mock.requests()
    assert not {h.lower() for h in sent["headers"]} & set(SPOOF)


def test_a_refused_callers_record_names_the_caller(gw: Gateway, idp: FakeKeycloak) -> None:
    # A 403 never reaches the pipeline: its line comes from Envoy's access log of refused requests,
    # with the identity authz established before refusing.
    import json
    import time

    key = _key(gw, "marketing-refused")
    assert eventually_ok(gw, key).status_code == 200
    assert chat(gw, "/governed", key, "gpt-4o").status_code == 403
    log = gw.stack.workdir / "extproc.log"
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        refused = [r for r in records if r.get("outcome") == "rejected" and r.get("http_status_code") == 403]
        mine = [r for r in refused if r["api_key_id"] == "marketing-refused-t"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert refused, "no record of the refused requests"
    assert mine, f"no refused record names the key: {refused}"
    assert mine[0]["user_id"] == "marketing-refused" and mine[0]["group_id"] == "marketing"
