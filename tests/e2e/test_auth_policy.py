"""CEL rules and OPA through the real Envoy: rules over the request and the model, the shipped
opa-envoy-plugin policy in process (its own 403 body and status), a Rego edit applied without a
restart, a broken edit keeping the last good policy, and an OPA server over its REST Data API."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import opa_eval
import pytest
from aiohttp import web

from extproc.ports import free_port
from tests.e2e.conftest import (
    OPENAI_KEY,
    ROOT,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

SHIPPED = ROOT / "policies" / "authz.rego"
ISSUER = "https://keycloak.test/realms/mcp-realm"

BY_MODEL = """\
package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_body.model == "MODEL"
"""

# What the OPA server decides: an object decision with its own status, header and body.
SERVER_POLICY = """\
package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 402, "headers": {"x-policy": "server"}, "body": "buy more credits"}

allow := {"allowed": true} if input.parsed_body.model == "gpt-4o-mini"
"""


class OpaServer:
    """OPA's REST Data API (``POST /v1/data/{path}`` with ``{"input": ...}``) on a thread of its
    own, deciding with a real Rego engine."""

    def __init__(self, rego: Path) -> None:
        self.rego = rego
        self.port = free_port()
        self.inputs: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        doc = await request.json()
        self.inputs.append(doc["input"])
        query = "data." + request.match_info["path"].replace("/", ".")
        result = opa_eval.OpaEval(str(self.rego), query=query).evaluate_parsed(json.dumps(doc["input"]))
        return web.json_response({} if result == "<undefined>" else {"result": result})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/data/{path:.+}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> OpaServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
            self.runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def keys() -> dict:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="test-rs256", alg="RS256", use="sig")
    return {"private": key, "jwks": {"keys": [jwk]}}


def token(keys: dict, groups: list[str]) -> str:
    import jwt

    now = int(time.time())
    claims = {"iss": ISSUER, "sub": f"user-{groups[0]}", "aud": "openweb-ui", "exp": now + 600, "iat": now}
    claims["groups"] = [f"/{g}" for g in groups]  # Keycloak's full group paths
    return jwt.encode(claims, keys["private"], algorithm="RS256", headers={"kid": "test-rs256"})


def routes(host: str, server: OpaServer, keys: dict) -> list[dict]:
    cel = {
        "authorization": {
            "rules": [
                'request.method == "POST"',
                {"deny": 'llm.model.startsWith("o")'},
                {"require": '!("x-block" in request.headers)'},
            ]
        }
    }
    out = [
        provider_route("cel", "/cel", {"openAI": {}}, host, OPENAI_KEY, **cel),
        provider_route("opa", "/opa", {"openAI": {}}, host, OPENAI_KEY, opa={"file": "authz.rego"}),
        provider_route("opa-edit", "/opa-edit", {"openAI": {}}, host, OPENAI_KEY, opa={"file": "edit.rego"}),
        provider_route(
            "opa-server", "/opa-server", {"openAI": {}}, host, OPENAI_KEY, opa={"url": server_url(server)}
        ),
    ]
    jwt_auth = {"issuer": ISSUER, "audiences": ["openweb-ui"], "jwks": keys["jwks"]}
    out.append(
        provider_route(
            "opa-jwt",
            "/opa-jwt",
            {"openAI": {}},
            host,
            OPENAI_KEY,
            jwtAuth=jwt_auth,
            opa={"file": "authz.rego"},
        )
    )
    return out


def server_url(server: OpaServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, keys: dict) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("auth-policy")
    shutil.copy(SHIPPED, tmp / "authz.rego")
    (tmp / "edit.rego").write_text(BY_MODEL.replace("MODEL", "gpt-4o-mini"))
    (tmp / "server.rego").write_text(SERVER_POLICY)
    server = OpaServer(tmp / "server.rego").start()
    mock = start_mock()
    config = listener_config(routes(f"127.0.0.1:{mock.port}", server, keys), sidecarTimeout="2s")
    try:
        with running([mock], lambda: launch(tmp, config, mock)) as gateway:
            gateway.opa_server = server  # type: ignore[attr-defined]
            yield gateway
    finally:
        server.stop()


def chat(gw: Gateway, prefix: str, model: str = "gpt-4o-mini", **headers: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=body, headers=headers, timeout=20)


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


# --- CEL rules -------------------------------------------------------------------------------


def test_cel_rules_allow_a_post_for_an_allowed_model(gw: Gateway) -> None:
    resp = chat(gw, "/cel", "gpt-4o-mini")
    assert resp.status_code == 200, resp.text


def test_cel_deny_rule_over_the_model_is_403_in_openai_shape(gw: Gateway) -> None:
    resp = chat(gw, "/cel", "o3")
    assert resp.status_code == 403, resp.text
    err = resp.json()["error"]
    assert err["code"] == "forbidden"
    assert "llm.model" not in resp.text  # the rule is policy detail, not the client's


def test_cel_allow_rule_over_the_method(gw: Gateway) -> None:
    resp = httpx.get(f"{gw.url}/cel/v1/models", timeout=20)
    assert resp.status_code == 403, resp.text


def test_cel_require_rule_over_headers(gw: Gateway) -> None:
    assert chat(gw, "/cel", "gpt-4o-mini", **{"x-block": "1"}).status_code == 403


# --- OPA in process, the shipped policy -------------------------------------------------------


def test_shipped_policy_refuses_with_its_own_status_and_body(gw: Gateway) -> None:
    gw.mock.clear()
    resp = chat(gw, "/opa")
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "forbidden_by_policy"
    assert "engineering" in resp.json()["error"]["message"]
    assert gw.mock.requests() == []  # refused before any provider


def test_shipped_policy_ignores_identity_a_client_sends(gw: Gateway) -> None:
    resp = chat(gw, "/opa", **{"x-groups": "engineering", "x-user-groups": "engineering"})
    assert resp.status_code == 403, resp.text


def test_shipped_policy_with_a_verified_jwt(gw: Gateway, keys: dict) -> None:
    engineer = chat(gw, "/opa-jwt", authorization=f"Bearer {token(keys, ['engineering'])}")
    assert engineer.status_code == 200, engineer.text
    marketer = chat(gw, "/opa-jwt", authorization=f"Bearer {token(keys, ['marketing'])}")
    assert marketer.status_code == 403, marketer.text
    assert marketer.json()["error"]["code"] == "forbidden_by_policy"


# --- OPA in process, edits without a restart ---------------------------------------------------


def test_a_rego_edit_applies_without_restart_and_a_broken_one_keeps_the_last_good(gw: Gateway) -> None:
    edit = gw.config_path.parent / "edit.rego"
    assert chat(gw, "/opa-edit", "gpt-4o-mini").status_code == 200
    assert chat(gw, "/opa-edit", "gpt-4o").status_code == 403
    pid = gw.stack.procs["authz"].pid

    edit.write_text(BY_MODEL.replace("MODEL", "gpt-4o"))
    assert eventually(lambda: chat(gw, "/opa-edit", "gpt-4o").status_code == 200), "the edit was not applied"
    assert chat(gw, "/opa-edit", "gpt-4o-mini").status_code == 403

    edit.write_text(BY_MODEL.replace("MODEL", "gpt-4o") + "\nallow if {\n")  # does not compile
    time.sleep(3)  # three polls
    assert chat(gw, "/opa-edit", "gpt-4o").status_code == 200  # the last good policy
    assert chat(gw, "/opa-edit", "gpt-4o-mini").status_code == 403
    assert gw.stack.procs["authz"].pid == pid  # no restart

    edit.write_text(BY_MODEL.replace("MODEL", "gpt-4o-mini"))
    assert eventually(lambda: chat(gw, "/opa-edit", "gpt-4o-mini").status_code == 200)


# --- an OPA server ---------------------------------------------------------------------------


def test_opa_server_allows_and_sends_the_plugins_input(gw: Gateway) -> None:
    server: OpaServer = gw.opa_server  # type: ignore[attr-defined]
    server.inputs.clear()
    resp = chat(gw, "/opa-server", "gpt-4o-mini")
    assert resp.status_code == 200, resp.text
    sent = server.inputs[-1]
    assert sent["parsed_path"] == ["opa-server", "v1", "chat", "completions"]
    assert sent["parsed_body"]["model"] == "gpt-4o-mini"
    assert sent["version"] == {"encoding": "protojson", "ext_authz": "v3"}
    http = sent["attributes"]["request"]["http"]
    assert http["method"] == "POST" and http["headers"][":path"] == "/opa-server/v1/chat/completions"
    assert json.loads(http["body"])["model"] == "gpt-4o-mini"


def test_opa_server_refusal_is_its_own_answer(gw: Gateway) -> None:
    resp = chat(gw, "/opa-server", "gpt-4o")
    assert resp.status_code == 402, resp.text
    assert resp.text == "buy more credits"
    assert resp.headers["x-policy"] == "server"


def test_opa_server_down_fails_closed(gw: Gateway) -> None:
    # Last in this module: it stops the OPA server for good.
    gw.opa_server.stop()  # type: ignore[attr-defined]
    resp = chat(gw, "/opa-server", "gpt-4o-mini")
    assert resp.status_code == 503, resp.text
    assert "unavailable" in resp.json()["error"]["message"]
    assert chat(gw, "/cel", "gpt-4o-mini").status_code == 200  # other routes keep serving
