"""A route's auth decided in process: which authenticator decides, modes, authorizer order,
entitlements, the models listing, and what Check answers (no Envoy)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2 as pb
from google.rpc import code_pb2

from extproc import contracts, gateway
from extproc.authz.caller import Caller, Forbidden, Grant, Unauthenticated
from extproc.authz.chain import RouteAuth
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest, looks_like_jwt
from extproc.authz.server import Authorization
from extproc.config.loader import parse_text

JWT_LIKE = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def _gateway(policies: dict[str, Any]) -> gateway.Gateway:
    config = {
        "binds": [
            {
                "port": 3000,
                "listeners": [
                    {
                        "routes": [
                            {
                                "name": "r",
                                "matches": [{"path": {"pathPrefix": "/r"}}],
                                "policies": {"backendAuth": {"key": "k"}, **policies},
                                "backends": [
                                    {
                                        "ai": {
                                            "groups": [
                                                {
                                                    "providers": [
                                                        {
                                                            "name": "a",
                                                            "provider": {"openAI": {"model": "gpt-4o"}},
                                                        }
                                                    ]
                                                },
                                                {
                                                    "providers": [
                                                        {
                                                            "name": "b",
                                                            "provider": {"openAI": {"model": "gpt-4o-mini"}},
                                                        }
                                                    ]
                                                },
                                            ]
                                        }
                                    }
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    return gateway.build(parse_text(yaml.safe_dump(config), "t.yaml").config)


def _check(
    method: str = "POST", path: str = "/r/v1/chat/completions", body: bytes = b"", **headers: str
) -> pb.CheckRequest:
    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method = method
    http.path = path
    http.raw_body = body
    for k, v in headers.items():
        http.headers[k.replace("_", "-")] = v
    check.attributes.context_extensions["route"] = "r"
    return check


class FakeAuthenticator:
    def __init__(self, name: str, mode: str, caller: Caller | None = None, invalid: bool = False) -> None:
        self.name, self.mode, self.caller, self.invalid = name, mode, caller, invalid
        self.calls = 0

    async def start(self) -> None:
        return None

    async def authenticate(self, req: AuthRequest) -> Caller | None:
        self.calls += 1
        if self.invalid:
            raise Unauthenticated("bad credential")
        return self.caller


class RecordingAuthorizer:
    name = "recording"

    def __init__(self, grant: Grant | None = None, refuse: bool = False) -> None:
        self.grant, self.refuse, self.seen = grant, refuse, []

    async def start(self) -> None:
        return None

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None:
        self.seen.append(caller)
        if self.refuse:
            raise Forbidden("no")
        return self.grant


def _auth(gw: gateway.Gateway, authenticators: list, authorizers: list | None = None) -> RouteAuth:
    auth = RouteAuth.build(gw.routes[0], AuthContext(Path(".")))
    auth.authenticators = authenticators
    if authorizers is not None:
        auth.authorizers = [*auth.authorizers, *authorizers]
    return auth


def _decide(auth: RouteAuth, gw: gateway.Gateway, check: pb.CheckRequest):
    return asyncio.run(auth.decide(AuthRequest.of(check, gw)))


ALICE = Caller(method="jwt", subject="alice", groups=["eng"])


def test_the_first_authenticator_that_finds_a_credential_decides() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    first, second = FakeAuthenticator("apiKey", "strict", ALICE), FakeAuthenticator("jwtAuth", "strict", None)
    decision = _decide(_auth(gw, [first, second]), gw, _check())
    assert decision.caller is ALICE
    assert second.calls == 0


def test_no_credential_is_401_when_any_authenticator_is_strict() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    auth = _auth(gw, [FakeAuthenticator("apiKey", "optional"), FakeAuthenticator("jwtAuth", "strict")])
    with pytest.raises(Unauthenticated) as err:
        _decide(auth, gw, _check())
    assert err.value.status == 401
    assert err.value.headers["www-authenticate"].startswith("Bearer")
    assert "apiKey or jwtAuth" in err.value.message


def test_no_credential_is_anonymous_when_none_is_strict() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    decision = _decide(_auth(gw, [FakeAuthenticator("jwtAuth", "optional")]), gw, _check())
    assert decision.caller.anonymous


def test_an_invalid_credential_is_401_even_when_optional() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    with pytest.raises(Unauthenticated):
        _decide(_auth(gw, [FakeAuthenticator("jwtAuth", "optional", invalid=True)]), gw, _check())


def test_authorizers_run_after_authentication_and_their_grants_merge() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    a = RecordingAuthorizer(Grant(headers={"x-a": "1"}))
    b = RecordingAuthorizer(Grant(response_headers={"x-b": "2"}))
    decision = _decide(_auth(gw, [FakeAuthenticator("k", "strict", ALICE)], [a, b]), gw, _check())
    assert a.seen == [ALICE] and b.seen == [ALICE]
    assert decision.grant.headers == {"x-a": "1"} and decision.grant.response_headers == {"x-b": "2"}


def test_a_refusing_authorizer_stops_the_chain() -> None:
    gw = _gateway({"modelAccess": {"default": ["*"]}})
    later = RecordingAuthorizer()
    auth = _auth(gw, [FakeAuthenticator("k", "strict", ALICE)], [RecordingAuthorizer(refuse=True), later])
    with pytest.raises(Forbidden):
        _decide(auth, gw, _check())
    assert later.seen == []


def _chat(model: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("caller", "model", "allowed"),
    [
        (Caller(method="jwt", subject="alice", groups=["eng"]), "gpt-4o", True),
        (Caller(method="jwt", subject="bob", groups=["marketing"]), "gpt-4o", False),
        (Caller(method="jwt", subject="bob", groups=["marketing"]), "gpt-4o-mini", True),
        # Several groups: the union.
        (Caller(method="jwt", subject="carol", groups=["marketing", "eng"]), "gpt-4o", True),
        # A user entry adds to the groups'.
        (Caller(method="jwt", subject="dave", groups=["marketing"]), "o3", True),
        # Named nowhere: the default.
        (Caller(method="jwt", subject="erin"), "gpt-4o-mini", True),
        (Caller(method="jwt", subject="erin"), "gpt-4o", False),
        # The key's own list applies too (both must allow).
        (
            Caller(method="api_key", api_key_id="k1", groups=["eng"], allowed_models=["gpt-4o-mini"]),
            "gpt-4o",
            False,
        ),
    ],
)
def test_model_entitlements_by_group_user_and_key(caller: Caller, model: str, allowed: bool) -> None:
    gw = _gateway(
        {
            "modelAccess": {
                "groups": {"eng": ["gpt-*"], "marketing": ["gpt-4o-mini"]},
                "users": {"dave": ["o3"]},
                "default": ["gpt-4o-mini"],
            }
        }
    )
    auth = _auth(gw, [FakeAuthenticator("k", "strict", caller)])
    if allowed:
        _decide(auth, gw, _check(body=_chat(model)))
    else:
        with pytest.raises(Forbidden) as err:
            _decide(auth, gw, _check(body=_chat(model)))
        assert err.value.code == "model_not_allowed"


def test_an_alias_is_checked_as_the_model_it_resolves_to() -> None:
    gw = _gateway(
        {
            "modelAccess": {"default": ["gpt-4o-mini"]},
            "ai": {"modelAliases": {"smart": "gpt-4o", "cheap": "gpt-4o-mini"}},
        }
    )
    auth = _auth(gw, [])
    _decide(auth, gw, _check(body=_chat("cheap")))
    with pytest.raises(Forbidden):
        _decide(auth, gw, _check(body=_chat("smart")))


def test_the_listing_is_the_route_models_the_caller_may_use() -> None:
    gw = _gateway({"modelAccess": {"groups": {"marketing": ["gpt-4o-mini"]}}})
    bob = Caller(method="jwt", subject="bob", groups=["marketing"])
    decision = _decide(_auth(gw, [FakeAuthenticator("k", "strict", bob)]), gw, _check("GET", "/r/v1/models"))
    assert decision.allowed_models == ["gpt-4o-mini"]


def test_an_unrestricted_caller_lists_everything() -> None:
    gw = _gateway({})
    decision = _decide(
        _auth(gw, [FakeAuthenticator("k", "strict", ALICE)]), gw, _check("GET", "/r/v1/models")
    )
    assert decision.allowed_models is None


def test_bearer_tokens_are_told_apart() -> None:
    assert looks_like_jwt(JWT_LIKE)
    assert not looks_like_jwt("sk-gw-abc.def.ghi")
    assert not looks_like_jwt("gw_0123456789")


# --- Check, as Envoy sees it -----------------------------------------------------------------------


def _servicer(policies: dict[str, Any], authenticators: list) -> tuple[Authorization, gateway.Gateway]:
    gw = _gateway(policies)
    servicer = Authorization(gw, AuthContext(Path(".")))
    servicer.routes["r"].authenticators = authenticators
    return servicer, gw


def test_an_allowed_check_carries_the_identity_in_metadata() -> None:
    servicer, _ = _servicer({"modelAccess": {"default": ["*"]}}, [FakeAuthenticator("k", "strict", ALICE)])
    resp = asyncio.run(servicer.Check(_check(body=_chat("gpt-4o")), None))  # type: ignore[arg-type]
    assert resp.status.code == code_pb2.OK
    ident = contracts.decode_identity(resp.dynamic_metadata.fields[contracts.IDENTITY_KEY].string_value)
    assert ident.subject == "alice" and list(ident.group_ids) == ["eng"]
    assert ident.auth_method == contracts.AuthMethod.AUTH_METHOD_JWT


def test_a_denied_check_is_the_client_apis_error_json() -> None:
    servicer, _ = _servicer({"modelAccess": {"default": ["*"]}}, [FakeAuthenticator("k", "strict")])
    resp = asyncio.run(servicer.Check(_check(path="/r/v1/messages"), None))  # type: ignore[arg-type]
    denied = resp.denied_response
    assert resp.status.code == code_pb2.PERMISSION_DENIED
    assert denied.status.code == 401
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers["content-type"] == "application/json"
    assert "www-authenticate" in headers
    assert '"authentication_error"' in denied.body


def test_a_crash_in_a_mechanism_is_a_503_not_a_pass() -> None:
    class Broken(FakeAuthenticator):
        async def authenticate(self, req: AuthRequest) -> Caller | None:
            raise RuntimeError("boom")

    servicer, _ = _servicer({"modelAccess": {"default": ["*"]}}, [Broken("k", "strict")])
    resp = asyncio.run(servicer.Check(_check(), None))  # type: ignore[arg-type]
    assert resp.denied_response.status.code == 503
    assert "boom" not in resp.denied_response.body


def test_a_check_for_a_route_without_policy_is_refused() -> None:
    servicer, _ = _servicer({"modelAccess": {"default": ["*"]}}, [])
    check = _check()
    check.attributes.context_extensions["route"] = "someone-else"
    resp = asyncio.run(servicer.Check(check, None))  # type: ignore[arg-type]
    assert resp.denied_response.status.code == 503


def test_extproc_reads_the_identity_claims_and_allowed_models() -> None:
    from extproc.pipeline.identity import caller_identity

    gw = _gateway({"modelAccess": {"default": ["*"]}})
    caller = Caller(
        method="jwt", subject="alice", groups=["eng", "ops"], claims={"sub": "alice", "name": "Alice"}
    )
    flat = caller_identity(gw.routes[0], contracts.encode_identity(caller.identity(["gpt-4o"])))
    assert flat["user_id"] == "alice" and flat["group_id"] == "eng" and flat["groups"] == ["eng", "ops"]
    assert flat["jwt"] == {"sub": "alice", "name": "Alice"}
    assert flat["allowed_models"] == ["gpt-4o"]


def test_a_checked_route_without_an_identity_is_refused_by_extproc() -> None:
    from extproc.errors import GatewayError
    from extproc.pipeline.identity import caller_identity

    gw = _gateway({"modelAccess": {"default": ["*"]}})
    with pytest.raises(GatewayError) as err:
        caller_identity(gw.routes[0], None)
    assert err.value.status == 503
    with pytest.raises(GatewayError):
        caller_identity(gw.routes[0], "not-base64!")
