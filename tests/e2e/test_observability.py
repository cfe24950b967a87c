"""Metrics, cost and log lines through the real Envoy: known traffic, exact numbers, no secret.

One gateway, one batch of known requests (both client APIs, streaming and not, a failover, a
provider error, a gateway 400, and refusals before the pipeline: no route, 413, a modelAccess 403),
then ``:15020/metrics`` and the usage records are read and held to each other and to the traffic.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from extproc.supervisor import Stack
from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    OPENAI_KEY,
    ROOT,
    Gateway,
    failover_route,
    free_port,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

LIMIT = 64 * 1024
# Every line has these, whatever happened (README "The usage record"; readme-obs "Log fields").
RECORD_FIELDS = {
    "type", "request_id", "client_request_id", "timestamp", "route", "api", "method", "path",
    "http_status_code", "outcome", "error", "provider", "provider_kind", "request_model",
    "response_model", "stream", "attempt_count", "attempts", "input_tokens", "output_tokens",
    "total_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd",
    "cost_status", "duration_ms", "time_to_first_byte_ms", "time_to_first_token_ms", "user_id",
    "api_key_id", "group_id", "guardrails", "budget",
}  # fmt: skip
OBS_CONFIG = {
    "metrics": {"fields": {"add": {"team": 'request.headers["x-team"]', "user_id": "identity.user_id"}}},
    "logging": {
        "fields": {
            "add": {
                "team": 'request.headers["x-team"]',
                "model": "llm.requestModel",
                "client_auth": 'request.headers["authorization"]',
                "prompt": "llm.prompt",
            }
        }
    },
    "cost": {"pricesFile": str(ROOT / "policies" / "prices.json")},
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "count these four words"}]}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "three more words"}],
}
SECRETS = (CLIENT_KEY, OPENAI_KEY, ANTHROPIC_KEY)


def observed_routes(host: str, down_host: str) -> list[dict]:
    entitled = provider_route("entitled", "/entitled", {"openAI": {}}, host, OPENAI_KEY)
    entitled["policies"]["modelAccess"] = {"default": ["gpt-4o-mini"]}  # anonymous: gpt-4o-mini only
    return [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, ANTHROPIC_KEY),
        failover_route("fo", "/fo", down_host, host),
        entitled,
    ]


# Every test of this module runs twice: whole answers read by the sidecar, and whole answers on
# routes that only observe them accounted from Envoy's access log (limits.answersFromAccessLog):
# the same numbers, fields and secrets either way.
@pytest.fixture(scope="module", params=[False, True], ids=["answers_read", "answers_from_access_log"])
def obs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock, down = start_mock(), start_mock("--force-status", "503")
    config = listener_config(
        observed_routes(f"127.0.0.1:{mock.port}", f"127.0.0.1:{down.port}"),
        maxRequestBytes=LIMIT,
        answersFromAccessLog=request.param,
    )
    config["config"].update(OBS_CONFIG)
    with running([mock, down], lambda: launch(tmp_path_factory.mktemp("obs"), config, mock)) as gw:
        yield gw


def post(gw: Gateway, path: str, body: Any, **headers: str) -> httpx.Response:
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    # Bytes are sent as JSON too (the gateway refuses another content type with a 415).
    headers = {"x-team": "red", "content-type": "application/json", **headers}
    return httpx.post(gw.url + path, headers=headers, timeout=20, **kw)


def metrics_text(gw: Gateway, path: str = "/metrics") -> str:
    resp = httpx.get(f"http://127.0.0.1:{gw.config['config']['metricsPort']}{path}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.text


def samples(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def records(gw: Gateway, count: int, timeout: float = 10.0) -> list[dict]:
    """The usage records on extproc's stdout, once ``count`` are there (refused ones come by
    Envoy's gRPC access log, flushed every 0.2 s)."""
    log = Path(gw.stack.workdir) / "extproc.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


@pytest.fixture(scope="module")
def traffic(obs: Gateway) -> dict[str, httpx.Response]:
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    sent = {
        "chat": post(obs, "/openai/v1/chat/completions", CHAT, **auth),
        "chat_stream": post(obs, "/openai/v1/chat/completions", {**CHAT, "stream": True}),
        "messages": post(obs, "/anthropic/v1/messages", MESSAGES, **{"x-api-key": CLIENT_KEY}),
        "messages_stream": post(obs, "/anthropic/v1/messages", {**MESSAGES, "stream": True}),
        "failover": post(obs, "/fo/v1/chat/completions", {"messages": CHAT["messages"]}),
        "unpriced": post(obs, "/openai/v1/chat/completions", {**CHAT, "model": "mock-unpriced-model"}),
        "provider_429": post(obs, "/openai/v1/chat/completions", CHAT, **{"x-mock-status": "429"}),
        "bad_json": post(obs, "/openai/v1/chat/completions", b"{not json"),
        "no_route": post(obs, "/nowhere/v1/chat/completions", CHAT, **auth),
        "too_large": post(obs, "/openai/v1/chat/completions", {**CHAT, "pad": "x" * (2 * LIMIT)}),
        "forbidden": post(obs, "/entitled/v1/chat/completions", CHAT),
    }
    expected = {
        "chat": 200, "chat_stream": 200, "messages": 200, "messages_stream": 200, "failover": 200,
        "unpriced": 200, "provider_429": 429, "bad_json": 400, "no_route": 404, "too_large": 413,
        "forbidden": 403,
    }  # fmt: skip
    assert {k: r.status_code for k, r in sent.items()} == expected, {k: r.text[:200] for k, r in sent.items()}
    return sent


def test_every_request_has_one_json_line_with_every_field_and_no_secret(obs: Gateway, traffic: dict) -> None:
    lines = records(obs, len(traffic))
    assert len(lines) == len(traffic)
    for line in lines:
        assert RECORD_FIELDS | {"team", "model", "client_auth", "prompt"} == set(line), line
        assert line["type"] == "llm_request" and len(line["request_id"]) == 32
        text = json.dumps(line)
        for secret in SECRETS:
            assert secret not in text, line
    by_status = Counter((line["route"], line["http_status_code"], line["outcome"]) for line in lines)
    assert by_status == Counter(
        {
            ("openai", 200, "ok"): 3,
            ("anthropic", 200, "ok"): 2,
            ("fo", 200, "ok"): 1,
            ("openai", 429, "provider_error"): 1,
            ("openai", 400, "gateway_error"): 1,
            (None, 404, "rejected"): 1,  # no route: refused before the pipeline
            ("openai", 413, "rejected"): 1,
            ("entitled", 403, "rejected"): 1,
        }
    )
    chat = next(line for line in lines if line["request_id"] == traffic["chat"].headers["x-gateway-request-id"])
    assert chat["client_auth"] == "[REDACTED]" and chat["team"] == "red" and chat["model"] == "gpt-4o"
    assert chat["cost_status"] == "priced" and chat["cost_usd"] == pytest.approx(
        chat["input_tokens"] * 2.5e-06 + chat["output_tokens"] * 1e-05
    )
    assert chat["prompt"] == CHAT["messages"]
    unpriced = next(line for line in lines if line["request_model"] == "mock-unpriced-model")
    assert (unpriced["cost_usd"], unpriced["cost_status"]) == (None, "unpriced")
    refused = next(line for line in lines if line["http_status_code"] == 403)
    assert refused["team"] == "red" and refused["client_request_id"] and refused["duration_ms"] >= 0


def test_metrics_are_exact_after_known_traffic(obs: Gateway, traffic: dict) -> None:
    lines = records(obs, len(traffic))
    text = metrics_text(obs)
    p = "agentgateway_"
    assert samples(text, p + "requests_total") == len(traffic)
    for (route, status, outcome), n in Counter(
        (line["route"] or "", str(line["http_status_code"]), line["outcome"]) for line in lines
    ).items():
        assert samples(text, p + "requests_total", route=route, status=status, outcome=outcome) == n
    with_usage = [line for line in lines if line["input_tokens"] is not None]
    assert len(with_usage) == 6
    for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
        name = p + "gen_ai_client_token_usage"
        assert samples(text, name + "_count", gen_ai_token_type=kind) == len(with_usage)
        assert samples(text, name + "_sum", gen_ai_token_type=kind) == sum(line[field] for line in with_usage)
    by_api = sum(line["input_tokens"] for line in with_usage if line["api"] == "messages")
    assert samples(text, p + "gen_ai_client_token_usage_sum", route="anthropic", gen_ai_token_type="input") == by_api
    assert samples(text, p + "gen_ai_client_token_usage_sum", team="red") > 0
    cost = sum(line["cost_usd"] or 0 for line in lines)
    assert samples(text, p + "gen_ai_client_cost_usd_total") == pytest.approx(cost, rel=1e-9)
    assert samples(text, p + "cost_catalog_lookups_total", status="missing") == 1
    assert samples(text, p + "retries_total", route="fo", provider="primary") == 1
    assert samples(text, p + "failovers_total", route="fo", provider="secondary") == 1
    assert samples(text, p + "gen_ai_server_time_to_first_token_count") == 2  # the two streams
    assert samples(text, p + "gen_ai_server_time_per_output_token_count") == 2
    # Every answer a provider gave, whatever its status; not the refusals.
    assert samples(text, p + "gen_ai_server_request_duration_count") == 8
    assert samples(text, p + "requests_total", outcome="rejected", route="entitled", status="403") == 1


def _ext_proc_messages(gw: Gateway) -> int:
    """What Envoy has sent the extproc sidecar so far, every ext_proc filter's messages."""
    url = f"http://127.0.0.1:{gw.config['config']['adminPort']}/stats?filter=ext_proc.stream_msgs_sent"
    text = httpx.get(url, timeout=10).text
    return sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if line.endswith(tuple("0123456789")))


def test_a_whole_answer_left_to_the_access_log_never_reaches_the_sidecar(obs: Gateway, traffic: dict) -> None:
    """With answersFromAccessLog, a whole answer on a route that only observes it costs the
    sidecar the request's two messages, not four; a stream still sends its answer. The record
    (and the x-gateway-request-id that finds it) is there either way."""
    logged = obs.config["config"]["limits"]["answersFromAccessLog"]
    records(obs, len(traffic))
    before = _ext_proc_messages(obs)
    whole = post(obs, "/openai/v1/chat/completions", CHAT)
    assert whole.status_code == 200, whole.text
    after_whole = _ext_proc_messages(obs)
    streamed = post(obs, "/openai/v1/chat/completions", {**CHAT, "stream": True})
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert after_whole - before == (2 if logged else 4)
    assert _ext_proc_messages(obs) - after_whole >= 4  # and the answer's headers and body
    lines = records(obs, len(traffic) + 2)
    line = next(x for x in lines if x["request_id"] == whole.headers["x-gateway-request-id"])
    assert (line["input_tokens"], line["output_tokens"]) == (
        whole.json()["usage"]["prompt_tokens"],
        whole.json()["usage"]["completion_tokens"],
    )
    assert line["outcome"] == "ok" and line["cost_status"] == "priced" and line["attempt_count"] == 1
    assert line["duration_ms"] >= line["time_to_first_byte_ms"] > 0


def test_metrics_port_serves_envoys_stats_too(obs: Gateway, traffic: dict) -> None:
    merged = metrics_text(obs)
    assert "envoy_cluster_upstream_rq_total" in merged and "agentgateway_requests_total" in merged
    envoy_only = metrics_text(obs, "/metrics/envoy")
    gateway_part = merged[: merged.index("# TYPE envoy_")]
    types = [line.split()[2] for line in gateway_part.splitlines() if line.startswith("# TYPE")]
    assert types and all(t.startswith("agentgateway_") for t in types)
    # Envoy's part is its /stats/prometheus as it is (Envoy's own names never start with ours).
    assert merged[len(gateway_part) :].count("# TYPE") == envoy_only.count("# TYPE")
    assert "envoy_cluster_upstream_rq_total" in envoy_only and "agentgateway_" not in envoy_only


def test_two_workers_give_exact_counts(tmp_path: Path) -> None:
    """Requests served by two workers, whichever is scraped: the counts are exact. Envoy keeps its
    gRPC connections, so the kernel may give them all to one worker; to make sure both serve, the
    worker that served the first half is stopped (its samples stay counted, as a crashed worker's
    do) and the other serves the second half."""
    mock = start_mock()
    config = listener_config(
        [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = Stack(
        str(path), tmp_path, extproc_port=free_port(), authz_port=free_port(), mock_port=None,
        extproc_workers=2, envoy_concurrency=2, quiet=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{config['binds'][0]['port']}/openai/v1/chat/completions"
    workers = ("extproc", "extproc-1")

    def served() -> dict[str, int]:
        return {w: (tmp_path / f"{w}.log").read_text().count('"outcome":"ok"') for w in workers}

    def send(n: int) -> int:
        ok = 0
        for _ in range(n):
            with httpx.Client() as client:  # a new client connection each time
                ok += client.post(url, json=CHAT, timeout=20).status_code == 200
        return ok

    try:
        stack.start(timeout=30)
        ok = send(12)
        assert ok == 12
        first = served()
        busiest = max(workers, key=lambda w: first[w])
        stack.stop_one(busiest)
        stack.wait_ready(30)
        ok += send(12)
        metrics_url = f"http://127.0.0.1:{config['config']['metricsPort']}/metrics"
        for _ in range(4):
            text = httpx.get(metrics_url, timeout=10).text
            assert samples(text, "agentgateway_requests_total", route="openai", status="200") == ok
            assert samples(text, "agentgateway_gen_ai_client_token_usage_count", gen_ai_token_type="input") == ok
        after = served()
    finally:
        stack.stop()
        mock.proc.terminate()
        mock.proc.wait(timeout=5)
    assert sum(after.values()) == ok >= 23  # a request in flight at the stop may be refused, never miscounted
    assert all(after.values()), f"one worker served everything: {after}"


def test_seed_metrics_testing_config_runs_with_its_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rate-limiting-metrics-failover-demo.md's metrics-testing.yaml, pointed at a mock on free
    ports (the only changes): metrics carry user_id/user_name, log lines the seed's fields."""
    seed = yaml.safe_load((ROOT / "tests" / "configs" / "metrics-testing.yaml").read_text())
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)  # the seed's backendAuth.key
    mock = start_mock()
    seed["config"].update({"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()})
    seed["binds"][0]["port"] = free_port()
    backend = seed["binds"][0]["listeners"][0]["routes"][0]["backends"][0]["ai"]
    backend["hostOverride"] = f"127.0.0.1:{mock.port}"
    with running([mock], lambda: launch(tmp_path, seed, mock)) as gw:
        messages = [
            {"role": "system", "content": "You are a skilled cloud-native network engineer."},
            {"role": "user", "content": "Write me a paragraph about Istio Ambient Mesh"},
        ]
        resp = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "claude-sonnet-4-5", "messages": messages},
            headers={"anthropic-version": "2023-06-01", "x-api-key": CLIENT_KEY},
            timeout=20,
        )
        assert resp.status_code == 200, resp.text
        (line,) = records(gw, 1)
        text = metrics_text(gw)
        log_text = (Path(gw.stack.workdir) / "extproc.log").read_text()
    seed_fields = {"user_id", "user_name", "authenticated", "jwt_act", "token_issuer", "token_audience"}
    assert seed_fields | {"model", "provider", "prompt"} <= set(line)
    assert all(line[f] is None for f in seed_fields)  # no JWT on this route: null, not absent
    assert line["provider"] == "anthropic" and line["model"] == "claude-3-5-haiku-latest"
    assert line["prompt"] == messages
    assert CLIENT_KEY not in json.dumps(line) and ANTHROPIC_KEY not in log_text
    usage = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "agentgateway_gen_ai_client_token_usage_sum"
    ]
    assert usage and all({"user_id", "user_name"} <= s.labels.keys() for s in usage)
    assert samples(text, "agentgateway_gen_ai_client_token_usage_sum", gen_ai_token_type="input") == line["input_tokens"]
    assert "tracing: OTLP/grpc to http://127.0.0.1:4317" in log_text  # the seed's collector (test_tracing.py)
