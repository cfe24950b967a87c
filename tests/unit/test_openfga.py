"""The openfga authorizer through the real openfga-sdk against a server speaking OpenFGA's HTTP
Check API (tests/fga_server.py) with the shipped model and example tuples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2 as pb

from extproc import gateway
from extproc.authz.caller import Caller, Denial, Forbidden, Unavailable
from extproc.authz.decision_cache import DecisionCache
from extproc.authz.mechanism import AuthContext
from extproc.authz.openfga import OpenFgaAuthorizer, escape
from extproc.authz.request import AuthRequest
from extproc.config.auth import OpenFgaPolicy
from extproc.config.loader import parse_text
from extproc.gateway import ResolvedRoute
from tests.fga_server import MODEL_ID, STORE_ID, FgaServer, RunningFga, Tuple, example_tuples

T = TypeVar("T")

DAVE_ENG = Caller(method="jwt", subject="dave", groups=["engineering"])  # in no stored team
BOB = Caller(method="jwt", subject="bob", groups=["marketing"])
CAROL = Caller(method="api_key", subject="carol", api_key_id="k-carol")
ANONYMOUS = Caller()


@pytest.fixture(scope="module")
def fga() -> Iterator[RunningFga]:
    running = RunningFga(FgaServer(tuples=example_tuples()))
    yield running
    running.stop()


@pytest.fixture
def server(fga: RunningFga) -> Iterator[FgaServer]:
    s = fga.server
    s.checks.clear()
    yield s
    s.delay, s.fail_status, s.token = 0.0, None, None
    s.tuples[:] = example_tuples()


def policy(url: str, **fields: Any) -> OpenFgaPolicy:
    return OpenFgaPolicy.model_validate({"url": url, "storeId": STORE_ID, **fields})


def _route(name: str, provider: dict) -> dict:
    backend = {"ai": {"name": name, "provider": {"openAI": provider}, "hostOverride": "127.0.0.1:9"}}
    return {"name": name, "matches": [{"path": {"pathPrefix": f"/{name}"}}], "backends": [backend]}


# Two routes: any model, and one whose provider names its model (a body may leave it out).
ROUTES = [_route("any", {}), _route("one", {"model": "gpt-4o"})]
GATEWAY = gateway.build(
    parse_text(yaml.safe_dump({"binds": [{"port": 3000, "listeners": [{"routes": ROUTES}]}]})).config
)
ANY, ONE = GATEWAY.routes


def chat(model: str | None, route: ResolvedRoute = ANY) -> AuthRequest:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    path = f"/{route.name}/v1/chat/completions"
    return AuthRequest(pb.CheckRequest(), route, "POST", path, {}, orjson.dumps(body))


def listing() -> AuthRequest:
    return AuthRequest(pb.CheckRequest(), ANY, "GET", "/any/v1/models", {}, b"")


def with_authorizer(pol: OpenFgaPolicy, body: Callable[[OpenFgaAuthorizer], Awaitable[T]]) -> T:
    """``body`` run with a started authorizer in a fresh loop, then the context closed."""

    async def main() -> T:
        ctx = AuthContext(Path("."))
        authz = OpenFgaAuthorizer(pol, ctx)
        await authz.start()
        try:
            return await body(authz)
        finally:
            await ctx.close()

    return asyncio.run(main())


def decide(pol: OpenFgaPolicy, caller: Caller, model: str | None) -> Denial | None:
    async def body(authz: OpenFgaAuthorizer) -> Denial | None:
        try:
            await authz.authorize(chat(model), caller)
        except Denial as denial:
            return denial
        return None

    return with_authorizer(pol, body)


# --- decisions ---------------------------------------------------------------------------------


def test_a_team_member_by_the_identity_providers_groups_is_allowed(
    fga: RunningFga, server: FgaServer
) -> None:
    assert decide(policy(fga.url), DAVE_ENG, "gpt-4o") is None
    sent = server.checks[-1]
    assert sent["tuple_key"] == {"user": "user:dave", "relation": "can_use", "object": "llm_model:gpt-4o"}
    assert sent["contextual_tuples"]["tuple_keys"] == [
        {"user": "user:dave", "relation": "member", "object": "team:engineering"}
    ]


def test_without_the_groups_the_same_user_is_refused(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url), Caller(method="jwt", subject="dave"), "gpt-4o")
    assert isinstance(denial, Forbidden) and denial.status == 403
    assert "contextual_tuples" not in server.checks[-1] or not server.checks[-1]["contextual_tuples"]


def test_group_tuples_can_be_turned_off(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url, groupTuple=None), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Forbidden)


def test_a_refusal_is_403_naming_the_model(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url), BOB, "gpt-4o")
    assert isinstance(denial, Forbidden) and denial.status == 403
    assert "'gpt-4o'" in denial.message and denial.code == "model_not_allowed"
    assert decide(policy(fga.url), BOB, "gpt-4o-mini") is None  # everyone's (user:*)


def test_a_direct_grant_and_other_templates(fga: RunningFga, server: FgaServer) -> None:
    assert decide(policy(fga.url), CAROL, "gemini-2.5-pro") is None
    server.tuples.append(Tuple("user:k-carol", "can_use", "llm_model:o1"))
    assert decide(policy(fga.url, user="user:{api_key}"), CAROL, "o1") is None
    assert server.checks[-1]["tuple_key"]["user"] == "user:k-carol"


def test_a_model_name_cannot_change_the_tuple(fga: RunningFga, server: FgaServer) -> None:
    assert escape("anthropic.claude-v1:0") == "anthropic.claude-v1%3A0"
    server.tuples.append(Tuple("user:*", "can_use", "llm_model:anthropic.claude-v1%3A0"))
    assert decide(policy(fga.url), BOB, "anthropic.claude-v1:0") is None
    # '#' would make the object a userset; escaped, it is just a model nobody was granted.
    denial = decide(policy(fga.url), BOB, "gpt-4o-mini#x y")
    assert isinstance(denial, Forbidden)
    assert server.checks[-1]["tuple_key"]["object"] == "llm_model:gpt-4o-mini%23x%20y"


def test_an_anonymous_caller_cannot_form_a_user_and_is_refused_without_a_check(
    fga: RunningFga, server: FgaServer
) -> None:
    denial = decide(policy(fga.url), ANONYMOUS, "gpt-4o-mini")
    assert isinstance(denial, Forbidden) and "'gpt-4o-mini'" in denial.message
    assert server.checks == []


def test_a_public_access_template_serves_anonymous_callers(fga: RunningFga, server: FgaServer) -> None:
    assert decide(policy(fga.url, user="user:*"), ANONYMOUS, "gpt-4o-mini") is None
    assert isinstance(decide(policy(fga.url, user="user:*"), ANONYMOUS, "gpt-4o"), Forbidden)


def test_a_request_without_a_model_is_refused(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url), DAVE_ENG, None)
    assert isinstance(denial, Forbidden) and "model" in denial.message
    assert server.checks == []


def test_without_a_model_the_routes_only_model_is_checked(fga: RunningFga, server: FgaServer) -> None:
    async def body(authz: OpenFgaAuthorizer) -> None:
        await authz.authorize(chat(None, ONE), DAVE_ENG)
        with pytest.raises(Forbidden, match="'gpt-4o'"):
            await authz.authorize(chat(None, ONE), BOB)

    with_authorizer(policy(fga.url), body)
    assert server.checks[0]["tuple_key"]["object"] == "llm_model:gpt-4o"


def test_the_authorization_model_id_is_sent_and_a_wrong_one_fails_closed(
    fga: RunningFga, server: FgaServer
) -> None:
    assert decide(policy(fga.url, authorizationModelId=MODEL_ID), DAVE_ENG, "gpt-4o") is None
    assert server.checks[-1]["authorization_model_id"] == MODEL_ID
    denial = decide(policy(fga.url, authorizationModelId="01HVMMBCMGZNT3SED4Z17ECXCZ"), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable) and denial.status == 503


def test_a_wrong_store_is_503(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url, storeId="01HVMMBCMGZNT3SED4Z17ECXCZ"), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable) and denial.status == 503
    assert "unavailable" in denial.message
    assert "store" not in denial.message.lower() and "fga" not in denial.message.lower()  # no internals


def test_store_id_and_token_from_the_environment(
    fga: RunningFga, server: FgaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.token = "fga-preshared-key"
    monkeypatch.setenv("TEST_FGA_STORE", STORE_ID)
    monkeypatch.setenv("TEST_FGA_TOKEN", "fga-preshared-key")
    pol = policy(fga.url, storeId="$TEST_FGA_STORE", apiToken="$TEST_FGA_TOKEN")
    assert decide(pol, DAVE_ENG, "gpt-4o") is None
    monkeypatch.setenv("TEST_FGA_TOKEN", "wrong")
    assert isinstance(decide(pol, DAVE_ENG, "gpt-4o"), Unavailable)  # the server's 401


def test_an_unset_variable_fails_closed_without_calling(fga: RunningFga, server: FgaServer) -> None:
    denial = decide(policy(fga.url, storeId="${TEST_FGA_NO_SUCH_VAR}"), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable) and "misconfigured" in denial.message
    assert server.checks == []


def test_an_unknown_placeholder_is_a_config_error(fga: RunningFga) -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        OpenFgaAuthorizer(policy(fga.url, object="llm_model:{modle}"), AuthContext(Path(".")))


# --- cache ---------------------------------------------------------------------------------------


def test_a_repeated_decision_is_cached(fga: RunningFga, server: FgaServer) -> None:
    async def body(authz: OpenFgaAuthorizer) -> None:
        for _ in range(3):
            await authz.authorize(chat("gpt-4o"), DAVE_ENG)
        assert len(server.checks) == 1
        with pytest.raises(Forbidden):  # other contextual tuples: another decision
            await authz.authorize(chat("gpt-4o"), Caller(method="jwt", subject="dave", groups=["sales"]))
        with pytest.raises(Forbidden):  # a cached refusal too
            await authz.authorize(chat("gpt-4o"), Caller(method="jwt", subject="dave", groups=["sales"]))
        assert len(server.checks) == 2

    with_authorizer(policy(fga.url, cacheTtl="1m"), body)


def test_no_cache_with_a_zero_ttl(fga: RunningFga, server: FgaServer) -> None:
    async def body(authz: OpenFgaAuthorizer) -> None:
        for _ in range(2):
            await authz.authorize(chat("gpt-4o"), DAVE_ENG)

    with_authorizer(policy(fga.url, cacheTtl="0s"), body)
    assert len(server.checks) == 2


def test_the_decision_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = DecisionCache(ttl=10, max_entries=3, clock=lambda: now[0])
    cache.put("a", True)
    cache.put("b", False)
    assert cache.get("a") is True and cache.get("b") is False
    now[0] = 10.0
    assert cache.get("a") is None
    for k in "cdef":
        cache.put(k, True)
    assert len(cache) == 3 and cache.get("c") is None and cache.get("f") is True


# --- failing closed ----------------------------------------------------------------------------


def test_a_server_that_is_down_is_503() -> None:
    running = RunningFga(FgaServer(tuples=example_tuples()))
    url = running.url
    running.stop()
    denial = decide(policy(url), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable) and denial.status == 503


def test_a_slow_server_is_503_within_the_timeout(fga: RunningFga, server: FgaServer) -> None:
    server.delay = 2.0
    started = time.monotonic()
    denial = decide(policy(fga.url, timeout="200ms"), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable) and "timed out" in denial.message
    assert time.monotonic() - started < 1.5


def test_an_error_answer_is_503_after_one_bounded_retry(fga: RunningFga, server: FgaServer) -> None:
    server.fail_status = 500
    denial = decide(policy(fga.url), DAVE_ENG, "gpt-4o")
    assert isinstance(denial, Unavailable)
    assert len(server.checks) == 2  # the SDK's retry, once


def test_retries_stay_within_the_timeout(fga: RunningFga, server: FgaServer) -> None:
    server.fail_status, server.delay = 503, 0.15
    started = time.monotonic()
    assert isinstance(decide(policy(fga.url, timeout="250ms"), DAVE_ENG, "gpt-4o"), Unavailable)
    assert time.monotonic() - started < 1.0


def test_errors_are_not_cached(fga: RunningFga, server: FgaServer) -> None:
    async def body(authz: OpenFgaAuthorizer) -> None:
        server.fail_status = 500
        with pytest.raises(Unavailable):
            await authz.authorize(chat("gpt-4o"), DAVE_ENG)
        server.fail_status = None
        await authz.authorize(chat("gpt-4o"), DAVE_ENG)

    with_authorizer(policy(fga.url), body)


def test_the_sdk_client_is_closed_with_the_context(fga: RunningFga, server: FgaServer) -> None:
    async def main() -> bool:
        ctx = AuthContext(Path("."))
        authz = OpenFgaAuthorizer(policy(fga.url), ctx)
        await authz.start()
        await authz.authorize(chat("gpt-4o"), DAVE_ENG)
        session = authz._client._api_client.rest_client.pool_manager  # type: ignore[union-attr]
        assert not session.closed
        await ctx.close()
        for _ in range(5):
            await asyncio.sleep(0)
        return session.closed

    assert asyncio.run(main())


# --- the models listing ----------------------------------------------------------------------


MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o1"]


def allowed(pol: OpenFgaPolicy, caller: Caller) -> list[str]:
    return with_authorizer(pol, lambda authz: authz.allowed_models(listing(), caller, MODELS))


def test_the_listing_holds_the_models_the_caller_may_use(fga: RunningFga, server: FgaServer) -> None:
    assert allowed(policy(fga.url), DAVE_ENG) == ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"]
    assert allowed(policy(fga.url), BOB) == ["gpt-4o-mini"]
    assert allowed(policy(fga.url), CAROL) == ["gpt-4o-mini", "gemini-2.5-pro"]
    assert allowed(policy(fga.url), ANONYMOUS) == []


def test_listing_then_using_a_model_checks_once(fga: RunningFga, server: FgaServer) -> None:
    async def body(authz: OpenFgaAuthorizer) -> None:
        assert await authz.authorize(listing(), DAVE_ENG) is None  # the listing itself passes
        await authz.allowed_models(listing(), DAVE_ENG, MODELS)
        await authz.authorize(chat("gpt-4o"), DAVE_ENG)

    with_authorizer(policy(fga.url), body)
    assert len(server.checks) == len(MODELS)


def test_the_listing_fails_closed_too(fga: RunningFga, server: FgaServer) -> None:
    server.fail_status = 500
    with pytest.raises(Unavailable):
        allowed(policy(fga.url), DAVE_ENG)


def test_check_reports_a_bad_template_with_its_line() -> None:
    from extproc.config.loader import ConfigError, parse_text

    route = _route("fga", {"model": "gpt-4o"})
    route["policies"] = {
        "openfga": {"url": "http://127.0.0.1:9", "storeId": STORE_ID, "object": "llm_model:{modle}"}
    }
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    with pytest.raises(ConfigError) as err:
        parse_text(yaml.safe_dump(config, sort_keys=False), "gw.yaml")
    (issue,) = err.value.issues
    assert "policies.openfga" in str(issue) and "unknown placeholder" in str(issue)
    assert str(issue).startswith("gw.yaml:")
