"""The rate limit stage in process: reserve, refuse, settle; the seeds' configs; files; remote; faults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from extproc import gateway
from extproc.config.loader import parse_text
from extproc.errors import GatewayError
from extproc.limits.context import LimitsContext
from extproc.limits.plan import envoy_bucket
from extproc.limits.store import MemoryStore, StoreUnavailable
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stage import Denied, request_side
from extproc.pipeline.stages.ratelimit import RateLimitStage
from extproc.translate.usage import Usage
from tests.rls_server import RlsServer

ROOT = Path(__file__).resolve().parents[2]
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def config(policies: dict[str, Any], matches: int = 1, **global_: Any) -> gateway.Gateway:
    route = {
        "name": "r",
        "matches": [{"path": {"pathPrefix": f"/p{i}"}} for i in range(matches)],
        "backends": [{"ai": {"name": "openai", "provider": {"openAI": {}}, "hostOverride": "127.0.0.1:9"}}],
        "policies": policies,
    }
    cfg: dict[str, Any] = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    if global_:
        cfg["config"] = global_
    return gateway.build(parse_text(yaml.safe_dump(cfg)).config)


def stage_of(gw: gateway.Gateway, tmp: Path = ROOT / "policies", **kw: Any) -> tuple[RateLimitStage, Clock]:
    clock = Clock()
    ctx = LimitsContext(gw, tmp, store=kw.pop("store", None) or MemoryStore())
    stage = ctx.stage_for(gw.routes[0])
    assert stage is not None
    stage.clock = clock
    return stage, clock


def exchange(
    gw: gateway.Gateway, body: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
) -> Exchange:
    ex = Exchange("id", gw.routes[0], "completions", "POST", "/p0/v1/chat/completions")
    ex.llm = LLMRequest("completions", dict(body or HI))
    ex.identity = identity or {}
    return ex


async def call(stage: RateLimitStage, ex: Exchange, used: int | None = 20, outcome: str = "ok") -> None:
    """One request through the stage: reserve, then settle as the answer says."""
    await request_side(stage, ex)
    ex.usage = Usage(input_tokens=used - 5, output_tokens=5) if used is not None else None
    ex.outcome = outcome
    await stage.on_complete(ex)
    await stage.drain()  # a remote amend is sent off the request's path


def refused(coro: Any) -> Denied:
    with pytest.raises(Denied) as err:
        asyncio.run(coro)
    return err.value


def seed(name: str) -> gateway.Gateway:
    return gateway.build(parse_text((ROOT / "tests" / "configs" / name).read_text()).config)


def test_the_seed_token_bucket_passes_the_first_request_and_refuses_the_second() -> None:
    gw = seed("seed-local-rate-limit.yaml")
    assert envoy_bucket(gw.routes[0]) is None  # a token limit: the stage's
    stage, clock = stage_of(gw)

    async def main() -> None:
        first = exchange(gw)
        await call(stage, first, used=20)  # 1 token reserved (the whole bucket), 20 used
        assert first.response_headers["x-ratelimit-limit"] == "1"
        assert first.response_headers["x-ratelimit-remaining"] == "0"
        clock.now += 50  # "run it again immediately": still in debt
        await request_side(stage, exchange(gw))

    err = refused(main())
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert "localRateLimit[0] on route" in err.message and "(tokens)" in err.message
    headers = err.headers or {}
    assert headers["x-ratelimit-limit"] == "1" and headers["x-ratelimit-remaining"] == "0"
    # 18.5 tokens of debt plus the one the request needs, at 1 per 100 s.
    assert int(headers["retry-after"]) == int(headers["x-ratelimit-reset"]) == 1950


def test_the_blogs_ten_per_minute_lets_ten_of_twelve_through_in_the_stage_too() -> None:
    blog = yaml.safe_load((ROOT / "tests" / "configs" / "blog-rate-limit.yaml").read_text())
    policies = blog["binds"][0]["listeners"][0]["routes"][0]["policies"]
    gw = config({"localRateLimit": policies["localRateLimit"]}, matches=2)  # two matches: not Envoy's
    assert envoy_bucket(gw.routes[0]) is None
    stage, _ = stage_of(gw)

    async def main() -> list[int]:
        out = []
        for _ in range(12):
            try:
                await call(stage, exchange(gw))
                out.append(200)
            except Denied as err:
                out.append(err.status)
        return out

    assert asyncio.run(main()) == [200] * 10 + [429] * 2


def test_one_request_bucket_alone_is_left_to_envoy() -> None:
    gw = config({"localRateLimit": [{"maxTokens": 10, "tokensPerFill": 10, "fillInterval": "60s"}]})
    assert envoy_bucket(gw.routes[0]) is not None
    assert LimitsContext(gw, ROOT, store=MemoryStore()).stage_for(gw.routes[0]) is None


def test_a_reservation_that_does_not_fit_is_refused_before_the_call() -> None:
    gw = config(
        {
            "localRateLimit": [
                {"maxTokens": 1000, "tokensPerFill": 1000, "fillInterval": "1h", "type": "tokens"}
            ]
        }
    )
    stage, _ = stage_of(gw)
    big = {**HI, "max_tokens": 600}

    async def main() -> None:
        first = exchange(gw, big)
        await request_side(stage, first)  # ~609 reserved, in flight
        second = exchange(gw, big)
        with pytest.raises(Denied) as err:
            await request_side(stage, second)  # 391 left: it cannot fit
        assert "needs about 60" in err.value.message
        first.usage, first.outcome = Usage(input_tokens=9, output_tokens=41), "ok"
        await stage.on_complete(first)  # settled at 50: 950 left
        third = exchange(gw, big)
        await request_side(stage, third)
        assert 330 <= int(third.response_headers["x-ratelimit-remaining"]) <= 345

    asyncio.run(main())


@pytest.mark.parametrize(
    ("outcome", "kept"), [("provider_error", False), ("gateway_error", False), ("client_disconnected", True)]
)
def test_without_usage_a_failed_request_gives_back_and_a_left_one_keeps(outcome: str, kept: bool) -> None:
    gw = config(
        {
            "localRateLimit": [
                {"maxTokens": 5000, "tokensPerFill": 5000, "fillInterval": "1h", "type": "tokens"}
            ]
        }
    )
    stage, _ = stage_of(gw)

    async def main() -> str:
        await call(stage, exchange(gw, {**HI, "max_tokens": 4000}), used=None, outcome=outcome)
        probe = exchange(gw, {**HI, "max_tokens": 1})
        await request_side(stage, probe)
        return probe.response_headers["x-ratelimit-remaining"]

    remaining = int(asyncio.run(main()))
    assert (remaining < 1000) if kept else (remaining > 4980)


def test_a_reservation_no_decide_took_is_still_settled_in_on_complete() -> None:
    """A later stage refused between on_request and decide (a budget): on_complete finds the
    reservation unanswered, takes its answer, and gives the tokens back."""
    gw = config(
        {
            "localRateLimit": [
                {"maxTokens": 5000, "tokensPerFill": 5000, "fillInterval": "1h", "type": "tokens"}
            ]
        }
    )
    stage, _ = stage_of(gw)

    async def main() -> tuple[str, str]:
        refused_later = exchange(gw, {**HI, "max_tokens": 4000})
        await stage.on_request(refused_later)  # reserved; no decide
        held = exchange(gw, {**HI, "max_tokens": 1})
        await request_side(stage, held)
        refused_later.outcome = "gateway_error"
        await stage.on_complete(refused_later)
        probe = exchange(gw, {**HI, "max_tokens": 1})
        await request_side(stage, probe)
        return held.response_headers["x-ratelimit-remaining"], probe.response_headers["x-ratelimit-remaining"]

    during, after = (int(v) for v in asyncio.run(main()))
    assert during < 1000  # the unanswered reservation was taken
    assert after >= 4950  # and given back (the two small requests still hold ~10 each)


def test_an_unanswered_reservation_that_was_not_taken_gives_nothing_back(tmp_path: Path) -> None:
    """A policy-file token window (a give-back lowers its use): a request that did not fit, refused
    by a later stage before decide, must not take another request's hold off the window."""
    text = (
        "domain: llm\ndescriptors:\n  - key: group_id\n    metadata: {type: tokens}\n"
        "    rate_limit: {unit: hour, requests_per_unit: 5000}\n"
    )
    gw = policy_gw(tmp_path, text)
    stage, _ = stage_of(gw, tmp_path)
    who = {"group_id": "sales"}

    async def main() -> str:
        held = exchange(gw, {**HI, "max_tokens": 4000}, who)
        await request_side(stage, held)  # ~4010 of 5000, in flight
        no_room = exchange(gw, {**HI, "max_tokens": 4000}, who)
        await stage.on_request(no_room)  # does not fit: not taken; no decide
        no_room.outcome = "gateway_error"
        await stage.on_complete(no_room)
        probe = exchange(gw, {**HI, "max_tokens": 1}, who)
        await request_side(stage, probe)
        return probe.response_headers["x-ratelimit-remaining"]

    assert int(asyncio.run(main())) < 1000  # the first request's hold is still counted


def policy_gw(tmp: Path, text: str, **extra: Any) -> gateway.Gateway:
    (tmp / "rl.yaml").write_text(text)
    return config({"rateLimits": {"file": "rl.yaml", "domain": "llm", **extra}})


PER_IDENTITY = """\
domain: llm
descriptors:
  - key: api_key_id
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: group_id
    metadata: {type: tokens}
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: user_id
    value: watched
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
"""


def test_request_limits_per_api_key(tmp_path: Path) -> None:
    gw = policy_gw(tmp_path, PER_IDENTITY)
    stage, clock = stage_of(gw, tmp_path)

    async def main() -> list[int]:
        out = []
        for key in ["a", "a", "b", "a", "a", "b"]:
            try:
                await call(stage, exchange(gw, identity={"api_key_id": key}))
                out.append(200)
            except Denied as err:
                assert err.headers and err.headers["x-ratelimit-limit"] == "3, 3;w=60"
                out.append(429)
        clock.now += 60  # the next minute's window
        await call(stage, exchange(gw, identity={"api_key_id": "a"}))
        return out

    assert asyncio.run(main()) == [200, 200, 200, 200, 429, 200]


def test_token_limits_per_group_settle_with_usage(tmp_path: Path) -> None:
    gw = policy_gw(tmp_path, PER_IDENTITY)
    stage, _ = stage_of(gw, tmp_path)
    marketing = {"group_id": "marketing", "user_id": "bob"}

    async def main() -> None:
        for _ in range(2):
            await call(stage, exchange(gw, {**HI, "max_tokens": 20}, marketing), used=45)
        ex = exchange(gw, {**HI, "max_tokens": 20}, marketing)
        with pytest.raises(Denied) as err:
            await request_side(stage, ex)  # 10 left, the request reserves ~29
        assert "rateLimits llm: group_id (tokens)" in err.value.message
        assert err.value.headers and err.value.headers["x-ratelimit-remaining"] == "10"
        await request_side(stage, exchange(gw, {**HI, "max_tokens": 20}, {"group_id": "sales"}))

    asyncio.run(main())


def test_shadow_mode_never_refuses_and_is_not_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = policy_gw(tmp_path, PER_IDENTITY)
    stage, _ = stage_of(gw, tmp_path)

    async def main() -> Exchange:
        for _ in range(2):
            ex = exchange(gw, identity={"user_id": "watched"})
            await call(stage, ex)
        return ex

    with caplog.at_level("INFO", logger="gateway.limits"):
        ex = asyncio.run(main())
    assert "x-ratelimit-limit" not in ex.response_headers
    assert "shadow mode: rateLimits llm: user_id=watched would refuse" in caplog.text


class DownStore(MemoryStore):
    async def reserve(self, counters, now):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("connection refused")


@pytest.mark.parametrize("mode", ["failClosed", "failOpen"])
def test_store_down_fails_as_configured(tmp_path: Path, mode: str) -> None:
    gw = policy_gw(tmp_path, PER_IDENTITY, failureMode=mode)
    stage, _ = stage_of(gw, tmp_path, store=DownStore())
    ex = exchange(gw, identity={"api_key_id": "a"})
    if mode == "failOpen":
        asyncio.run(call(stage, ex))
        return
    with pytest.raises(GatewayError) as err:
        asyncio.run(request_side(stage, ex))
    assert err.value.status == 503 and err.value.code == "rate_limit_unavailable"


def test_the_store_default_failure_mode_is_closed() -> None:
    gw = config({"localRateLimit": [{"maxTokens": 5, "fillInterval": "1s", "type": "tokens"}]})
    stage, _ = stage_of(gw, store=DownStore())
    with pytest.raises(GatewayError) as err:
        asyncio.run(request_side(stage, exchange(gw)))
    assert err.value.status == 503


def remote_gw(host: str, **extra: Any) -> gateway.Gateway:
    return config(
        {
            "remoteRateLimit": {
                "host": host,
                "domain": "llm",
                "descriptors": [
                    {"entries": [{"key": "user", "value": "jwt.sub"}], "type": "tokens"},
                    {
                        "entries": [
                            {"key": "route", "value": '"r"'},
                            {"key": "org", "value": 'request.headers["x-org"]'},
                        ]
                    },
                ],
                **extra,
            }
        }
    )


def test_remote_checks_with_hits_addend_and_amends_tokens() -> None:
    async def main() -> None:
        rls = await RlsServer({(("user", "alice"),): 100, (("route", "r"), ("org", "*")): 2}).start()
        try:
            gw = remote_gw(rls.host)
            stage, _ = stage_of(gw)
            ident = {"user_id": "alice", "jwt": {"sub": "alice"}}
            ex = exchange(gw, identity=ident)
            ex.headers = {"x-org": "acme"}
            await call(stage, ex, used=40)
            checks, amend = rls.seen[:2], rls.seen[2]
            by_key = {s.descriptors[0][0][0][0]: s for s in checks}  # the first entry's key
            assert by_key["route"].hits_addend == 1
            assert by_key["route"].descriptors == [((("route", "r"), ("org", "acme")), 1)]
            prompt = by_key["user"].hits_addend
            assert 5 <= prompt <= 15 and by_key["user"].descriptors == [((("user", "alice"),), prompt)]
            assert amend.descriptors[0][0] == (("user", "alice"),)
            assert amend.hits_addend == 40 - prompt  # the amend: what the prompt estimate missed
            assert ex.response_headers["x-rls-served"] == "1"
            # The most constrained first: route/org, 1 left of 2.
            assert ex.response_headers["x-ratelimit-limit"] == "2, 2;w=60, 100;w=60"
            assert ex.response_headers["x-ratelimit-remaining"] == "1"
            # No x-org header: that descriptor is left out, the user's still goes.
            ex2 = exchange(gw, identity=ident)
            await call(stage, ex2)
            assert all(d == (("user", "alice"),) for s in rls.seen[3:] for d, _ in s.descriptors)
            rls.seen.clear()
            ex3 = exchange(gw, identity=ident)
            ex3.headers = {"x-org": "acme"}
            await call(stage, ex3)
            ex4 = exchange(gw, identity=ident)
            ex4.headers = {"x-org": "acme"}
            with pytest.raises(Denied) as err:
                await request_side(stage, ex4)
            assert err.value.headers and err.value.headers["retry-after"]
            assert "remoteRateLimit llm: route=r, org=acme" in err.value.message
        finally:
            await rls.stop()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["failClosed", "failOpen"])
def test_remote_down_fails_as_configured(mode: str) -> None:
    from extproc.ports import free_port

    gw = remote_gw(f"127.0.0.1:{free_port()}", failureMode=mode, timeout="200ms")
    stage, _ = stage_of(gw)
    ex = exchange(gw, identity={"jwt": {"sub": "alice"}})
    if mode == "failOpen":
        asyncio.run(request_side(stage, ex))
        return
    with pytest.raises(GatewayError) as err:
        asyncio.run(request_side(stage, ex))
    assert err.value.status == 503


def test_bad_cel_in_remote_descriptors_is_a_config_error() -> None:
    from extproc.config.loader import ConfigError

    with pytest.raises(ConfigError) as err:
        remote_gw("127.0.0.1:1", descriptors=[{"entries": [{"key": "u", "value": "jtw.sub"}]}])
    assert "unknown variable jtw" in str(err.value)


def test_the_429_body_is_the_clients_api_error_shape() -> None:
    from extproc.pipeline.reply import error_reply

    gw = config(
        {
            "localRateLimit": [
                {"maxTokens": 1, "fillInterval": "60s"},
                {"maxTokens": 100, "fillInterval": "60s"},
            ]
        }
    )
    stage, _ = stage_of(gw)

    async def main() -> Denied:
        await call(stage, exchange(gw))
        with pytest.raises(Denied) as err:
            await request_side(stage, exchange(gw))
        return err.value

    err = asyncio.run(main())
    openai = error_reply("completions", err).immediate
    anthropic = error_reply("messages", err).immediate
    assert openai is not None and anthropic is not None
    assert orjson.loads(openai.body)["error"]["type"] == "rate_limit_error"
    assert orjson.loads(openai.body)["error"]["code"] == "rate_limit_exceeded"
    assert orjson.loads(anthropic.body)["error"]["type"] == "rate_limit_error"
    # The second bucket gets 1 token back a minute: 6000 s to fill.
    assert openai.headers["x-ratelimit-limit"] == "1, 1;w=60, 100;w=6000"
    assert openai.headers["retry-after"] == "60"


def test_remembered_names_follow_a_reloaded_file_and_many_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extproc.limits.policy_file import parse_policy
    from extproc.pipeline.stages import ratelimit
    from extproc.telemetry import runtime

    monkeypatch.setattr(ratelimit, "_NAMES_KEPT", 2)  # three callers: names are forgotten and redone
    gw = policy_gw(tmp_path, PER_IDENTITY)
    stage, clock = stage_of(gw, tmp_path)
    assert stage.policy is not None

    async def main() -> list[int]:
        out = []
        for key in ["a", "b", "c", "a", "b", "c", "a", "a"]:
            try:
                await call(stage, exchange(gw, identity={"api_key_id": key}))
                out.append(200)
            except Denied:
                out.append(429)
        assert len(stage._known) <= 2  # kept to the bound, not one entry per caller ever seen
        # The same limit path per hour now: a's gauge is the hour's, not the remembered minute's.
        stage.policy.current = parse_policy(PER_IDENTITY.replace("unit: minute", "unit: hour"), "rl.yaml")
        clock.now += 3600  # the next hour (this hour's key is the first minute's: the same start)
        await call(stage, exchange(gw, identity={"api_key_id": "a"}))
        return out

    assert asyncio.run(main()) == [200] * 7 + [429]
    periods = {s[1] for s in runtime.current().metrics.quota_series() if s[0] == "rateLimits/llm/api_key_id"}
    assert periods == {"minute", "hour"}


def test_a_callers_remembered_counter_moves_on_with_the_window(tmp_path: Path) -> None:
    """The stage keeps each caller's policy-file counter between requests: at a window's end it
    takes the next window's, the one the admin API finds for that caller (managed.file_counter)."""
    from extproc.limits import managed

    gw = policy_gw(tmp_path, PER_IDENTITY)
    store = MemoryStore()
    stage, clock = stage_of(gw, tmp_path, store=store)
    assert stage.policy is not None
    ident = {"api_key_id": "a"}

    async def main() -> list[int]:
        out = []
        for step in range(8):  # 3 a minute: four each minute, the fourth refused
            if step == 4:
                clock.now += 60
            try:
                await call(stage, exchange(gw, identity=ident))
                out.append(200)
            except Denied:
                out.append(429)
        return out

    assert asyncio.run(main()) == [200, 200, 200, 429] * 2
    [m] = [m for m in stage.policy.current.match({"api_key_id": "a", "route": "r"})]
    assert store.windows[managed.file_counter("llm", m, clock.now, 1).key][0] == 3


def test_quota_gauges_are_set_just_after_the_decision_off_the_requests_path(tmp_path: Path) -> None:
    from extproc.telemetry import runtime

    gw = policy_gw(tmp_path, PER_IDENTITY)
    stage, _ = stage_of(gw, tmp_path)
    metrics = runtime.current().metrics
    labels = {"quota": "rateLimits/llm/api_key_id", "period": "minute", "unit": "requests",
              "api_key_id": "gauged", "user_id": "", "group_id": "", "model": "", "route": ""}  # fmt: skip

    async def main() -> tuple[float | None, float | None]:
        await request_side(stage, exchange(gw, identity={"api_key_id": "gauged"}))
        before = metrics.registry.get_sample_value("agentgateway_quota_used", labels)
        await asyncio.sleep(0)  # the event loop's next turn
        return before, metrics.registry.get_sample_value("agentgateway_quota_used", labels)

    assert asyncio.run(main()) == (None, 1)
