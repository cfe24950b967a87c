"""Rate limits through the real Envoy: the seeds' configs (Envoy's own filter and the stage, the
same answers either way), token buckets settled by streamed usage, per-key limits from a policy
file with identities from the real authz, a remote RLS service, and three replicas sharing one
real Redis that is stopped and started under them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    ROOT,
    Gateway,
    Mock,
    PatchedStack,
    free_port,
    listener_config,
    provider_route,
    start_mock,
)
from tests.redis_server import RedisServer, start_redis
from tests.rls_server import RlsServer

CONFIGS = ROOT / "tests" / "configs"
HELLO = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hello!"}]}
MESSAGES = {
    "model": "claude-3-5-haiku-latest",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}
LIMIT_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}


def start(tmp: Path, config: dict, mock: Mock, envoy_concurrency: int = 2) -> Gateway:
    """A gateway on ``config``; Envoy with two worker threads, so its limits must hold across them."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = PatchedStack(
        config_path=str(path),
        workdir=tmp,
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=None,
        envoy_concurrency=envoy_concurrency,
        quiet=True,
    )
    stack.start(timeout=30)
    port = config["binds"][0]["port"]
    ready = f"http://127.0.0.1:{config['config']['readinessPort']}/ready"
    return Gateway(f"http://127.0.0.1:{port}", stack, mock, config, path, ready)


@contextmanager
def gateway_on(tmp: Path, make: Callable[[Mock], dict], **kw: Any) -> Iterator[Gateway]:
    mock = start_mock()
    try:
        gw = start(tmp, make(mock), mock, **kw)
        try:
            yield gw
        finally:
            gw.stack.stop()
    finally:
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def seed_config(name: str, mock: Mock) -> dict:
    """A seed config as written, with the mock as its provider and free ports."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    config["binds"][0]["port"] = free_port()
    config["config"] = {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()}
    ai = config["binds"][0]["listeners"][0]["routes"][0]["backends"][0]["ai"]
    ai["hostOverride"] = f"127.0.0.1:{mock.port}"
    return config


def burst(
    url: str, bodies: list[tuple[str, dict]], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """All at once, each on its own connection (so they spread over Envoy's worker threads)."""

    def one(item: tuple[str, dict]) -> httpx.Response:
        with httpx.Client(timeout=20) as client:
            return client.post(url + item[0], json=item[1], headers=headers or {})

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


# --- the seeds --------------------------------------------------------------------------------


def blog_answers(gw: Gateway) -> tuple[list[httpx.Response], httpx.Response]:
    answers = burst(gw.url, [("/v1/messages", MESSAGES)] * 12)
    openai = httpx.post(gw.url + "/v1/chat/completions", json=HELLO, timeout=20)
    return answers, openai


def check_blog(answers: list[httpx.Response], openai: httpx.Response) -> tuple[dict, dict]:
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 10 + [429] * 2, [(r.status_code, r.text[:120]) for r in answers]
    passed = next(r for r in answers if r.status_code == 200)
    assert set(passed.headers) >= LIMIT_HEADERS, passed.headers
    assert passed.headers["x-ratelimit-limit"] == "10"
    refused = next(r for r in answers if r.status_code == 429)
    assert LIMIT_HEADERS | {"retry-after"} <= set(refused.headers), refused.headers
    assert refused.headers["x-ratelimit-limit"] == "10" and refused.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 6  # one token of 10 a minute
    assert refused.headers["content-type"].startswith("application/json")
    body = refused.json()  # the client's API: Anthropic's error on /v1/messages
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"].startswith("rate limit exceeded (localRateLimit[0] on route ")
    assert openai.status_code == 429
    err = openai.json()["error"]  # ... and OpenAI's on /v1/chat/completions
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    return body, err


def test_the_blogs_config_through_envoy_lets_exactly_ten_of_twelve_rapid_requests_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    with gateway_on(tmp_path, lambda m: seed_config("blog-rate-limit.yaml", m)) as gw:
        gw.mock.clear()
        answers, openai = blog_answers(gw)
        check_blog(answers, openai)
        assert len(gw.mock.requests()) == 10  # the refused ones never reached a provider
        rendered = (gw.stack.workdir / "envoy.yaml").read_text()
        assert "envoy.filters.http.local_ratelimit" in rendered  # Envoy's own filter did it


def test_the_same_limit_in_the_stage_answers_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)

    def two_matches(mock: Mock) -> dict:
        config = seed_config("blog-rate-limit.yaml", mock)
        route = config["binds"][0]["listeners"][0]["routes"][0]
        route["matches"] = [{"path": {"pathPrefix": "/v1"}}, {"path": {"pathPrefix": "/other"}}]
        return config

    with gateway_on(tmp_path, two_matches) as gw:
        answers, openai = blog_answers(gw)
        stage_body, stage_err = check_blog(answers, openai)
        assert "envoy.filters.http.local_ratelimit" not in (gw.stack.workdir / "envoy.yaml").read_text()
    with gateway_on(tmp_path / "envoy", lambda m: seed_config("blog-rate-limit.yaml", m)) as gw:
        envoy_body, envoy_err = check_blog(*blog_answers(gw))
    # The same message whoever refused (the route is named alike: the config gives it no name).
    assert (
        stage_body["error"]["message"].split(" on route ")[0]
        == envoy_body["error"]["message"].split(" on route ")[0]
    )
    assert stage_err["code"] == envoy_err["code"] and stage_err["type"] == envoy_err["type"]


def test_the_seeds_local_rate_limit_yaml_refuses_the_second_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with gateway_on(tmp_path, lambda m: seed_config("seed-local-rate-limit.yaml", m)) as gw:
        # The seed's curl, twice.
        first = httpx.post(gw.url + "/v1/chat/completions", json=HELLO, timeout=20)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit"] == "1"
        second = httpx.post(gw.url + "/v1/chat/completions", json=HELLO, timeout=20)
        assert second.status_code == 429, second.text
        err = second.json()["error"]
        assert err["message"].startswith("rate limit exceeded") and "(tokens)" in err["message"]
        assert int(second.headers["retry-after"]) > 100  # the first answer's tokens are owed, 1 per 100 s


# --- token buckets settle with the usage, streaming included --------------------------------------


def test_a_streamed_answer_settles_the_token_bucket(tmp_path: Path) -> None:
    def tokens_route(mock: Mock) -> dict:
        route = provider_route(
            "tok", "/tok", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY,
            localRateLimit=[{"maxTokens": 10000, "tokensPerFill": 10000, "fillInterval": "1h", "type": "tokens"}],
        )  # fmt: skip
        return listener_config([route])

    with gateway_on(tmp_path, tokens_route) as gw:
        url = gw.url + "/tok/v1/chat/completions"
        body = {**HELLO, "model": "gpt-4o", "max_tokens": 3000, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=20) as resp:
            assert resp.status_code == 200
            reserved_left = int(resp.headers["x-ratelimit-remaining"])  # while the estimate is held
            text = "".join(resp.iter_text())
        assert "[DONE]" in text
        assert 6900 <= reserved_left <= 7000  # about 3,010 reserved
        probe = httpx.post(url, json={**HELLO, "model": "gpt-4o", "max_tokens": 10}, timeout=20)
        assert probe.status_code == 200
        # The stream used a few dozen tokens: settled, so nearly all 10,000 are back.
        assert int(probe.headers["x-ratelimit-remaining"]) > 9800


def test_a_client_that_leaves_mid_stream_is_settled_with_what_the_provider_reported(tmp_path: Path) -> None:
    def tokens_route(mock: Mock) -> dict:
        route = provider_route(
            "tok", "/tok", {"anthropic": {}}, f"127.0.0.1:{mock.port}", ANTHROPIC_KEY,
            localRateLimit=[{"maxTokens": 10000, "tokensPerFill": 10000, "fillInterval": "1h", "type": "tokens"}],
        )  # fmt: skip
        return listener_config([route])

    with gateway_on(tmp_path, tokens_route) as gw:
        url = gw.url + "/tok/v1/chat/completions"
        body = {**HELLO, "model": "claude-3-5-haiku-latest", "max_tokens": 3000, "stream": True}
        slow = {"x-mock-chunk-delay-ms": "400"}  # Anthropic's message_start (input tokens) comes first
        with httpx.stream("POST", url, json=body, headers=slow, timeout=20) as resp:
            assert resp.status_code == 200
            assert int(resp.headers["x-ratelimit-remaining"]) < 7100  # about 3,010 held
            next(resp.iter_bytes())  # the first event, then the client goes away
        time.sleep(1.5)
        probe = httpx.post(
            url, json={**HELLO, "model": "claude-3-5-haiku-latest", "max_tokens": 10}, timeout=20
        )
        assert probe.status_code == 200, probe.text
        # Settled with the usage reported before the cut (the prompt's tokens), not kept at 3,010.
        assert int(probe.headers["x-ratelimit-remaining"]) > 9900


# --- per-key limits from a policy file, with the real authz ------------------------------------------

KEYS = {"sk-gw-limits-alice-0001": ("key-alice", "alice"), "sk-gw-limits-bob-0002": ("key-bob", "bob")}


def test_request_limits_per_api_key_from_a_policy_file(tmp_path: Path) -> None:
    def keyed(mock: Mock) -> dict:
        (tmp_path / "ratelimits.yaml").write_text(
            "domain: e2e\ndescriptors:\n  - key: api_key_id\n    rate_limit: {unit: minute, requests_per_unit: 3}\n"
        )
        keys = [{"key": k, "metadata": {"id": i, "user": u}} for k, (i, u) in KEYS.items()]
        route = provider_route(
            "keyed", "/keyed", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY,
            apiKey={"keys": keys}, rateLimits={"file": "ratelimits.yaml", "domain": "e2e"},
        )  # fmt: skip
        return listener_config([route])

    with gateway_on(tmp_path, keyed) as gw:
        url = gw.url + "/keyed/v1/chat/completions"
        codes = {}
        for key in KEYS:
            codes[key] = [
                httpx.post(
                    url, json=HELLO, headers={"authorization": f"Bearer {key}"}, timeout=20
                ).status_code
                for _ in range(4)
            ]
        assert codes == {k: [200, 200, 200, 429] for k in KEYS}
        refused = httpx.post(
            url, json=HELLO, headers={"authorization": "Bearer sk-gw-limits-bob-0002"}, timeout=20
        )
        assert refused.headers["x-ratelimit-limit"] == "3, 3;w=60"
        assert "rateLimits e2e: api_key_id" in refused.json()["error"]["message"]
        # Operators edit the file while the gateway runs: a bigger limit is in force within seconds.
        (tmp_path / "ratelimits.yaml").write_text(
            "domain: e2e\ndescriptors:\n  - key: api_key_id\n    rate_limit: {unit: minute, requests_per_unit: 50}\n"
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            again = httpx.post(
                url, json=HELLO, headers={"authorization": "Bearer sk-gw-limits-bob-0002"}, timeout=20
            )
            if again.status_code == 200:
                break
            time.sleep(0.3)
        assert again.status_code == 200 and again.headers["x-ratelimit-limit"] == "50, 50;w=60"


# --- remoteRateLimit against a server speaking RLS ------------------------------------------------


def test_remote_rate_limit_checks_and_amends_over_rls(tmp_path: Path) -> None:
    rls = RlsServer({(("org", "*"),): 2, (("route", "remote"),): 1000}).start_in_thread()
    try:

        def remote(mock: Mock) -> dict:
            route = provider_route(
                "remote", "/remote", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY,
                remoteRateLimit={
                    "host": rls.host, "domain": "llm",
                    "descriptors": [
                        {"entries": [{"key": "org", "value": 'request.headers["x-org"]'}]},
                        {"entries": [{"key": "route", "value": "route"}], "type": "tokens"},
                    ],
                },
            )  # fmt: skip
            return listener_config([route])

        long = {**HELLO, "messages": [{"role": "user", "content": " ".join(["word"] * 50)}]}
        with gateway_on(tmp_path, remote) as gw:
            url = gw.url + "/remote/v1/chat/completions"
            codes = [
                httpx.post(url, json=long, headers={"x-org": "acme"}, timeout=20).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]
            time.sleep(0.3)  # the amend is sent as the exchange completes
            tokens = [s for s in rls.seen if s.descriptors[0][0] == (("route", "remote"),)]
            checks = [s for s in tokens if s.hits_addend == tokens[0].hits_addend]
            amends = [s for s in tokens if s not in checks]
            assert 50 <= tokens[0].hits_addend <= 70  # the prompt's estimate, before the call
            assert len(checks) == 3 and len(amends) == 2  # the refused request is not amended
            assert all(a.hits_addend > 10 for a in amends)  # the answer's tokens, after it
            orgs = [s for s in rls.seen if s.descriptors[0][0] == (("org", "acme"),)]
            assert [s.hits_addend for s in orgs] == [1, 1, 1]
    finally:
        rls.stop_thread()


# --- three replicas sharing one Redis --------------------------------------------------------------


def test_three_replicas_sharing_redis_enforce_the_limit_and_survive_a_redis_restart(tmp_path: Path) -> None:
    redis: RedisServer = start_redis(tmp_path / "redis")
    mock = start_mock()
    gateways: list[Gateway] = []
    try:
        policy = tmp_path / "ratelimits.yaml"
        policy.write_text(
            "domain: shared\ndescriptors:\n  - key: route\n    rate_limit: {unit: hour, requests_per_unit: 15}\n"
        )
        for n in range(3):
            route = provider_route(
                "shared", "/shared", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY,
                rateLimits={"file": str(policy), "domain": "shared"},
            )  # fmt: skip
            config = listener_config([route])
            config["config"]["rateLimitStore"] = {
                "redis": {"url": redis.url, "keyPrefix": f"e2e{id(tmp_path)}:"}
            }
            gateways.append(start(tmp_path / f"replica{n}", config, mock, envoy_concurrency=1))
        bodies = [(f"/shared/v1/chat/completions#{i}", HELLO) for i in range(45)]
        with ThreadPoolExecutor(max_workers=15) as pool:
            answers = list(
                pool.map(
                    lambda ib: httpx.post(
                        gateways[ib[0] % 3].url + ib[1][0].split("#")[0], json=HELLO, timeout=20
                    ),
                    enumerate(bodies),
                )
            )
        codes = [a.status_code for a in answers]
        assert codes.count(200) == 15 and codes.count(429) == 30, codes
        # Redis goes away: every replica fails closed (503, JSON), then recovers on its own.
        redis.stop()
        down = httpx.post(gateways[1].url + "/shared/v1/chat/completions", json=HELLO, timeout=20)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "rate_limit_unavailable"
        log = (gateways[1].stack.workdir / "extproc.log").read_text()
        assert "unreachable" in log and "failClosed" in log
        redis.start()  # an empty Redis on the same port: the hour's count starts again
        back = [
            httpx.post(g.url + "/shared/v1/chat/completions", json=HELLO, timeout=20).status_code
            for g in gateways
        ]
        assert back == [200, 200, 200]
    finally:
        for g in gateways:
            g.stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
        redis.stop()
