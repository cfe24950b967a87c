"""The ``opa`` authorizer: decisions read as opa-envoy-plugin reads them, the in-process engine's
reload (a bad file keeps the last good policy), an OPA server over its REST Data API, and the
shipped policies/authz.rego."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import opa_eval
import pytest
from aiohttp import web

from extproc.authz.caller import Caller, Denial, Forbidden, Grant, Unavailable
from extproc.authz.mechanism import AuthContext
from extproc.authz.opa import OpaAuthorizer
from extproc.authz.opa_decision import grant_or_denial
from extproc.authz.opa_engine import OpaLoadError
from extproc.authz.request import AuthRequest
from extproc.authz.server import denied
from extproc.config.auth import OpaPolicy
from extproc.ports import free_port
from tests.unit.policy_util import auth_request, chat_body

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "authz.rego"
ENGINEER = Caller(
    method="jwt", subject="ada", groups=["engineering"], claims={"sub": "ada", "groups": ["/engineering"]}
)
MARKETER = Caller(
    method="jwt", subject="mo", groups=["marketing"], claims={"sub": "mo", "groups": ["marketing"]}
)

BY_MODEL = """\
package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_body.model == "gpt-4o-mini"
"""


def run(coro_fn: Callable[[AuthContext], Awaitable[Any]], tmp: Path) -> Any:
    async def main() -> Any:
        ctx = AuthContext(tmp)
        try:
            return await coro_fn(ctx)
        finally:
            await ctx.close()

    return asyncio.run(main())


def chat(model: str = "gpt-4o-mini") -> AuthRequest:
    return auth_request("POST", "/openai/v1/chat/completions", chat_body(model))


async def decide(opa: OpaAuthorizer, req: AuthRequest, caller: Caller | None = None) -> Grant | Denial | None:
    try:
        return await opa.authorize(req, caller or Caller())
    except Denial as denial:
        return denial


def ok(result: Grant | Denial | None) -> bool:
    return not isinstance(result, Denial)


# --- decisions -------------------------------------------------------------------------------


def test_boolean_decisions() -> None:
    assert grant_or_denial(True, "t") is None
    with pytest.raises(Forbidden) as info:
        grant_or_denial(False, "t")
    assert info.value.status == 403 and info.value.body is None


def test_an_allowing_object_carries_headers_and_metadata() -> None:
    grant = grant_or_denial(
        {
            "allowed": True,
            "headers": [{"x-a": "1"}, {"x-b": ["2", "3"], "x-a": "4"}],
            "response_headers_to_add": {"x-policy": "v2"},
            "request_headers_to_remove": ["x-debug"],
            "dynamic_metadata": {"tier": "gold"},
            "http_status": 299,  # ignored on allow, as the plugin does
        },
        "t",
    )
    assert grant == Grant(
        headers={"x-a": "1,4", "x-b": "2,3"},
        response_headers={"x-policy": "v2"},
        remove_headers=["x-debug"],
        metadata={"tier": "gold"},
    )


def test_a_refusing_object_is_the_policys_own_answer() -> None:
    with pytest.raises(Denial) as info:
        grant_or_denial(
            {
                "allowed": False,
                "http_status": 429,
                "body": '{"slow": "down"}',
                "headers": {"Retry-After": "5", "Content-Type": "application/json"},
            },
            "t",
        )
    resp = denied(info.value, "completions")
    assert resp.denied_response.status.code == 429
    assert resp.denied_response.body == '{"slow": "down"}'
    headers = [(h.header.key, h.header.value) for h in resp.denied_response.headers]
    assert sorted(headers) == [("content-type", "application/json"), ("retry-after", "5")]


def test_a_body_without_a_content_type_is_text() -> None:
    with pytest.raises(Denial) as info:
        grant_or_denial({"allowed": False, "body": "no"}, "t")
    resp = denied(info.value, "completions")
    assert resp.denied_response.status.code == 403 and resp.denied_response.body == "no"
    assert [(h.header.key, h.header.value) for h in resp.denied_response.headers] == [
        ("content-type", "text/plain")
    ]


def test_a_refusing_object_without_status_is_403() -> None:
    with pytest.raises(Denial) as info:
        grant_or_denial({"allowed": False}, "t")
    assert info.value.status == 403 and info.value.body is None


@pytest.mark.parametrize(
    "decision",
    [
        {"headers": {"x": "1"}},  # missing "allowed"
        {"allowed": "yes"},
        {"allowed": False, "http_status": 999},
        {"allowed": False, "http_status": "403"},
        {"allowed": False, "body": {"not": "a string"}},
        {"allowed": True, "headers": {"x": 1}},
        {"allowed": True, "request_headers_to_remove": "x-a"},
        {"allowed": True, "dynamic_metadata": ["x"]},
        "allow",
        ["allowed"],
        None,
    ],
)
def test_a_decision_the_plugin_would_reject_fails_closed_and_is_logged(
    decision: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.authz"), pytest.raises(Unavailable) as info:
        grant_or_denial(decision, "policy.rego")
    assert info.value.status == 503
    assert any("policy.rego gave an invalid decision" in r.getMessage() for r in caplog.records)


# --- the in-process engine ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    # A new mtime even on coarse clocks: the engine polls (mtime, size, inode).
    path.write_text(text)
    stamp = time.time_ns() + 10**9 * (hash(text) % 1000 + 1)
    import os

    os.utime(path, ns=(stamp, stamp))
    return path


def test_in_process_decisions_and_undefined_is_403(tmp_path: Path) -> None:
    write(tmp_path / "p.rego", BY_MODEL + '\nobj := {"allowed": true} if input.parsed_body.model == "x"\n')

    async def go(ctx: AuthContext) -> None:
        opa = OpaAuthorizer(OpaPolicy(file="p.rego"), ctx)
        await opa.start()
        assert ok(await decide(opa, chat("gpt-4o-mini")))
        assert isinstance(await decide(opa, chat("gpt-4o")), Forbidden)
        undefined = OpaAuthorizer(OpaPolicy(file="p.rego", path="envoy/authz/obj"), ctx)
        await undefined.start()
        assert ok(await decide(undefined, chat("x")))
        refused = await decide(undefined, chat("gpt-4o"))
        assert isinstance(refused, Forbidden) and refused.status == 403

    run(go, tmp_path)


def test_a_policy_that_does_not_compile_is_a_startup_error_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.rego", "package envoy.authz\n\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n")

    async def go(ctx: AuthContext) -> None:
        with pytest.raises(OpaLoadError, match=r"bad\.rego:7:1: "):
            await OpaAuthorizer(OpaPolicy(file="bad.rego"), ctx).start()

    run(go, tmp_path)


def test_a_missing_rule_or_file_is_a_startup_error(tmp_path: Path) -> None:
    write(tmp_path / "p.rego", BY_MODEL)

    async def go(ctx: AuthContext) -> None:
        with pytest.raises(OpaLoadError, match=r"defines no rule data\.envoy\.authz\.result"):
            await OpaAuthorizer(OpaPolicy(file="p.rego", path="envoy/authz/result"), ctx).start()
        with pytest.raises(OpaLoadError, match="no such policy file"):
            await OpaAuthorizer(OpaPolicy(file="nope.rego"), ctx).start()
        with pytest.raises(OpaLoadError, match="not a rule path"):
            OpaAuthorizer(OpaPolicy(file="p.rego", path="envoy/au-thz/allow"), ctx)

    run(go, tmp_path)


def test_an_edit_applies_and_a_broken_edit_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rego = write(tmp_path / "p.rego", BY_MODEL)

    async def go(ctx: AuthContext) -> None:
        opa = OpaAuthorizer(OpaPolicy(file="p.rego"), ctx)
        await opa.start()
        assert opa.engine is not None
        assert not ok(await decide(opa, chat("gpt-4o")))  # refused
        write(rego, BY_MODEL.replace('"gpt-4o-mini"', '"gpt-4o"'))
        assert await opa.engine.reload_if_changed()
        assert ok(await decide(opa, chat("gpt-4o")))
        with caplog.at_level(logging.ERROR, logger="gateway.authz"):
            write(rego, BY_MODEL + "\nallow if {\n")
            assert not await opa.engine.reload_if_changed()
        assert ok(await decide(opa, chat("gpt-4o")))  # still the last good one
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert f"{rego}:" in logged and "keeping the last good policy" in logged
        assert not await opa.engine.reload_if_changed()  # the same broken file: no retry, no new log
        write(rego, BY_MODEL)
        assert await opa.engine.reload_if_changed()
        assert not ok(await decide(opa, chat("gpt-4o")))

    run(go, tmp_path)


def test_the_watcher_reloads_in_the_background(tmp_path: Path) -> None:
    rego = write(tmp_path / "p.rego", BY_MODEL)

    async def go(ctx: AuthContext) -> None:
        opa = OpaAuthorizer(OpaPolicy(file="p.rego"), ctx, poll_interval=0.05)
        await opa.start()
        write(rego, BY_MODEL.replace('"gpt-4o-mini"', '"gpt-4o"'))
        for _ in range(100):
            if ok(await decide(opa, chat("gpt-4o"))):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the edit was not applied")

    run(go, tmp_path)


def test_data_reloads_and_bad_data_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(
        tmp_path / "p.rego",
        "package envoy.authz\n\nimport rego.v1\n\nallow if input.parsed_body.model in data.models\n",
    )
    data = write(tmp_path / "data.json", json.dumps({"models": ["gpt-4o-mini"]}))

    async def go(ctx: AuthContext) -> None:
        opa = OpaAuthorizer(OpaPolicy(file="p.rego", data="data.json"), ctx)
        await opa.start()
        assert opa.engine is not None
        assert isinstance(await decide(opa, chat("o3")), Forbidden)
        write(data, json.dumps({"models": ["o3"]}))
        assert await opa.engine.reload_if_changed()
        assert ok(await decide(opa, chat("o3")))
        with caplog.at_level(logging.ERROR, logger="gateway.authz"):
            write(data, '{\n  "models": [\n')
            assert not await opa.engine.reload_if_changed()
        assert ok(await decide(opa, chat("o3")))
        assert any(f"{data}:3:" in r.getMessage() for r in caplog.records)

    run(go, tmp_path)


def test_a_request_that_cannot_be_input_is_400(tmp_path: Path) -> None:
    write(tmp_path / "p.rego", "package envoy.authz\n\nimport rego.v1\n\nallow := true\n")

    async def go(ctx: AuthContext) -> None:
        opa = OpaAuthorizer(OpaPolicy(file="p.rego"), ctx)
        await opa.start()
        bad = await decide(opa, auth_request("POST", "/v1/chat/completions", b"{not json"))
        assert isinstance(bad, Denial) and bad.status == 400
        assert ok(await decide(opa, chat()))

    run(go, tmp_path)


# --- an OPA server over the REST Data API ------------------------------------------------------


class FakeOpaServer:
    """OPA's ``POST /v1/data/{path}`` with ``{"input": ...}``, evaluating with a real engine."""

    def __init__(self, rego: Path, *, delay: float = 0.0, status: int = 200) -> None:
        self.rego = rego
        self.delay = delay
        self.status = status
        self.inputs: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"code": "internal_error", "message": "boom"}, status=self.status)
        doc = await request.json()
        self.inputs.append(doc["input"])
        query = "data." + request.match_info["path"].replace("/", ".")
        result = opa_eval.OpaEval(str(self.rego), query=query).evaluate_parsed(json.dumps(doc["input"]))
        return web.json_response({} if result == "<undefined>" else {"result": result})

    async def __aenter__(self) -> FakeOpaServer:
        app = web.Application()
        app.router.add_post("/v1/data/{path:.+}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def test_server_mode_with_the_shipped_policy(tmp_path: Path) -> None:
    async def go(ctx: AuthContext) -> None:
        async with FakeOpaServer(SHIPPED) as server:
            opa = OpaAuthorizer(OpaPolicy(url=server.url), ctx)
            await opa.start()
            assert ok(await decide(opa, chat(), ENGINEER))
            refused = await decide(opa, chat(), MARKETER)
            assert isinstance(refused, Denial) and refused.status == 403
            assert refused.body is not None and b"forbidden_by_policy" in refused.body
            sent = server.inputs[0]
            assert sent["parsed_path"] == ["openai", "v1", "chat", "completions"]
            assert sent["attributes"]["request"]["http"]["method"] == "POST"

    run(go, tmp_path)


def test_server_mode_undefined_is_403(tmp_path: Path) -> None:
    write(
        tmp_path / "p.rego",
        'package envoy.authz\n\nimport rego.v1\n\nallow if input.parsed_body.model == "x"\n',
    )

    async def go(ctx: AuthContext) -> None:
        async with FakeOpaServer(tmp_path / "p.rego") as server:
            opa = OpaAuthorizer(OpaPolicy(url=server.url + "/"), ctx)
            refused = await decide(opa, chat())
            assert isinstance(refused, Forbidden) and refused.status == 403

    run(go, tmp_path)


@pytest.mark.parametrize("fault", ["down", "slow", "error"])
def test_a_server_that_cannot_answer_is_503(tmp_path: Path, fault: str) -> None:
    async def go(ctx: AuthContext) -> None:
        if fault == "down":
            opa = OpaAuthorizer(OpaPolicy(url=f"http://127.0.0.1:{free_port()}"), ctx)
            result = await decide(opa, chat(), ENGINEER)
        else:
            server = FakeOpaServer(
                SHIPPED, delay=2.0 if fault == "slow" else 0, status=200 if fault == "slow" else 500
            )
            async with server:
                opa = OpaAuthorizer(OpaPolicy(url=server.url, timeout="200ms"), ctx)
                started = time.monotonic()
                result = await decide(opa, chat(), ENGINEER)
                assert time.monotonic() - started < 1.5
        assert isinstance(result, Unavailable) and result.status == 503

    run(go, tmp_path)


# --- the shipped policy, in process ----------------------------------------------------------


def shipped(tmp: Path, req: AuthRequest, caller: Caller | None = None) -> Grant | Denial | None:
    async def go(ctx: AuthContext) -> Grant | Denial | None:
        opa = OpaAuthorizer(OpaPolicy(file=str(SHIPPED)), ctx)
        await opa.start()
        return await decide(opa, req, caller)

    return run(go, tmp)


def test_shipped_policy_lets_engineering_post_chat_completions(tmp_path: Path) -> None:
    assert ok(shipped(tmp_path, chat(), ENGINEER))
    keycloak_roles = Caller(method="jwt", claims={"sub": "x", "realm_access": {"roles": ["engineering"]}})
    assert ok(shipped(tmp_path, chat(), keycloak_roles))


@pytest.mark.parametrize(
    ("req_args", "caller"),
    [
        (("POST", "/openai/v1/chat/completions"), MARKETER),
        (("POST", "/openai/v1/chat/completions"), None),
        (("GET", "/openai/v1/models"), ENGINEER),
        (("POST", "/openai/v1/embeddings"), ENGINEER),
        # groups an API key names are not verified token claims
        (
            ("POST", "/openai/v1/chat/completions"),
            Caller(method="api_key", api_key_id="k", groups=["engineering"]),
        ),
    ],
)
def test_shipped_policy_refuses_others_with_its_own_body(
    tmp_path: Path, req_args: tuple[str, str], caller: Caller | None
) -> None:
    refused = shipped(tmp_path, auth_request(*req_args, chat_body()), caller)
    assert isinstance(refused, Denial) and refused.status == 403
    assert refused.headers == {"content-type": "application/json"}
    assert refused.body is not None
    assert json.loads(refused.body)["error"]["code"] == "forbidden_by_policy"


def test_shipped_policy_trusts_nothing_a_client_sets(tmp_path: Path) -> None:
    import base64

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    forged = f"{b64({'alg': 'none'})}.{b64({'sub': 'eve', 'groups': ['engineering']})}."
    req = auth_request(
        "POST",
        "/openai/v1/chat/completions",
        chat_body(),
        headers={"authorization": f"Bearer {forged}", "x-groups": "engineering", "x-jwt-payload": "{}"},
    )
    assert isinstance(shipped(tmp_path, req), Denial)


def test_regorus_never_verifies_tokens_itself(tmp_path: Path) -> None:
    # io.jwt.decode_verify is undefined in regorus: with the keys in data, a token the policy would
    # verify in OPA still gets nothing in process (claims must come from jwtAuth there).
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"llm_gateway": {"jwt": {"cert": '{"keys": []}'}}}))
    engine = opa_eval.OpaEval(str(SHIPPED), data_json=data.read_text(), query="data.envoy.authz.claims")
    doc = {"attributes": {"request": {"http": {"headers": {"authorization": "Bearer a.b.c"}}}}}
    assert engine.evaluate_parsed(json.dumps(doc)) == "<undefined>"


def test_check_reports_a_policy_that_does_not_compile(tmp_path: Path) -> None:
    import subprocess
    import sys

    write(tmp_path / "bad.rego", "package envoy.authz\n\nimport rego.v1\n\nallow if {\n")
    config = {
        "binds": [
            {
                "port": 3000,
                "listeners": [
                    {
                        "routes": [
                            {
                                "name": "r",
                                "matches": [{"path": {"pathPrefix": "/x"}}],
                                "backends": [{"ai": {"name": "a", "provider": {"openAI": {}}}}],
                                "policies": {"opa": {"file": "bad.rego"}},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout
    assert f"{tmp_path / 'bad.rego'}:6:" in result.stderr and "route r" in result.stderr
    write(tmp_path / "bad.rego", BY_MODEL)
    ok_run = subprocess.run(
        [sys.executable, "-m", "extproc", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert ok_run.returncode == 0, ok_run.stderr
