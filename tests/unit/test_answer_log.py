"""Whole answers accounted from Envoy's access log: which requests qualify, and what an entry
makes of the exchange it completes (the e2e side: tests/e2e/test_observability.py, both ways)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2

from extproc import gateway
from extproc.config.loader import parse_text
from extproc.errors import GatewayError
from extproc.headers import ANSWER_FACTS, ANSWER_LOGGED, METADATA_NAMESPACE, REQUEST_ID
from extproc.pipeline import answer_log, route_facts
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.reply import Reply
from extproc.pipeline.router import RouterProcessor
from extproc.pipeline.stage import Stage
from extproc.pipeline.stages import RoutePipeline
from extproc.pipeline.stages.shaping import RequestShaping
from extproc.pipeline.stages.usage_record import UsageRecord

CONFIG = """
config:
  limits: {answersFromAccessLog: true}
binds:
- port: 8080
  listeners:
  - routes:
    - name: openai
      matches: [{path: {pathPrefix: /openai}}]
      backends: [{ai: {name: openai, provider: {openAI: {model: gpt-4o}}, hostOverride: "127.0.0.1:9"}}]
      policies: {backendAuth: {key: sk-test}}
    - name: claude
      matches: [{path: {pathPrefix: /claude}}]
      backends: [{ai: {name: claude, provider: {anthropic: {}}, hostOverride: "127.0.0.1:9"}}]
      policies: {backendAuth: {key: sk-test}}
"""


def build(text: str = CONFIG) -> gateway.Gateway:
    return gateway.build(parse_text(text).config)


def exchange(gw: gateway.Gateway, route: str = "openai", api: str = "completions") -> Exchange:
    ex = Exchange(request_id="ab" * 16, route=gw.routes_by_id[route], api=api, method="POST", path="/x")
    ex.started = 100.0
    return ex


class Recorder(Stage):
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    async def on_complete(self, ex: Exchange) -> None:
        self.seen.append(ex)


def fmt_of(gw: gateway.Gateway, ex: Exchange, flag: bool | None, stages: list[Stage] | None = None) -> str | None:
    pipeline = RoutePipeline.of(stages if stages is not None else [UsageRecord()])
    return answer_log.format_for(gw, pipeline, route_facts.of(ex.route), ex, flag)


def test_only_a_whole_answer_on_an_observed_route_qualifies() -> None:
    gw = build()
    ex = exchange(gw)
    assert fmt_of(gw, ex, False) == "openai"
    assert fmt_of(gw, exchange(gw, "claude", "messages"), False) == "anthropic"
    assert fmt_of(gw, exchange(gw, api="embeddings"), False) is None  # the answer is rebuilt (translated)
    assert fmt_of(gw, ex, True) is None  # streams keep the answer's messages
    assert fmt_of(gw, ex, None) is None  # Envoy did not say (not JSON, encoded, not a boolean)
    assert fmt_of(gw, exchange(gw, "claude", "completions"), False) is None  # translated
    assert fmt_of(gw, ex, False, [RequestShaping.__new__(RequestShaping), UsageRecord()]) == "openai"
    reader = Recorder()
    reader.needs = UsageRecord.needs  # another stage that reads the answer (a guard, a limit)
    assert fmt_of(gw, ex, False, [reader, UsageRecord()]) is None
    off = build(CONFIG.replace("answersFromAccessLog: true", "answersFromAccessLog: false"))
    assert fmt_of(off, exchange(off), False) is None


def test_not_with_several_workers_nor_for_a_traced_request(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = build()
    ex = exchange(gw)
    monkeypatch.setattr(answer_log.PARKED, "one_worker", False)
    assert fmt_of(gw, ex, False) is None  # the entry could reach another worker
    monkeypatch.setattr(answer_log.PARKED, "one_worker", True)

    class Sampled:
        sampled = True

    ex.trace = Sampled()  # type: ignore[assignment]
    assert fmt_of(gw, ex, False) is None  # its span wants the finish reasons


def test_a_body_that_streams_after_envoy_read_it_would_not_is_refused() -> None:
    gw = build()
    router = RouterProcessor(gw, {"openai": RoutePipeline.of([UsageRecord()])})
    headers = {":path": "/openai/v1/chat/completions", ":method": "POST", "content-type": "application/json"}
    reply = asyncio.run(router.request_headers(headers, False, "openai", stream_flag=False))
    assert reply.response_header_mode is None and router.logged_format == "openai"
    with pytest.raises(GatewayError) as err:
        asyncio.run(router.request_body(b'{"model": "gpt-4o", "stream": true, "messages": []}'))
    assert err.value.status == 400


def entry(status: int = 200, **fields: Any) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.response.response_code.value = status
    e.response.response_code_details = fields.pop("details", "via_upstream" if status else "")
    props = e.common_properties
    props.upstream_request_attempt_count = 1
    props.time_to_first_upstream_rx_byte.FromMilliseconds(40)
    props.duration.FromMilliseconds(50)
    ns = props.metadata.filter_metadata[METADATA_NAMESPACE]
    ns.update({REQUEST_ID: "ab" * 16, ANSWER_LOGGED: "1"})
    if fields.pop("dc", False):
        props.response_flags.downstream_connection_termination = True
    if fields:
        props.metadata.filter_metadata[ANSWER_FACTS].update(fields)
    return e


def test_an_entry_completes_the_exchange_as_the_answer_would_have() -> None:
    gw = build()
    ex = exchange(gw)
    ex.llm = LLMRequest("completions", {"model": "gpt-4o", "messages": []})
    answer_log.complete_from_entry(
        ex, "openai", entry(model="gpt-4o-2024-08-06", prompt_tokens=12, completion_tokens=7, total_tokens=19,
                            cached_tokens=4, reasoning_tokens=2),
    )  # fmt: skip
    assert ex.completed and (ex.status, ex.outcome) == (200, "ok")
    usage = ex.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (12, 7)
    assert (usage.cache_read_tokens, usage.reasoning_tokens) == (4, 2)
    assert ex.response_model == "gpt-4o-2024-08-06" and ex.upstream is ex.route.direct_upstream
    assert ex.first_byte == pytest.approx(100.04) and ex.ended == pytest.approx(100.05)
    assert [(a.number, a.outcome, a.status) for a in ex.attempts] == [(1, "answered", 200)]


def test_anthropic_usage_from_an_entry() -> None:
    gw = build()
    ex = exchange(gw, "claude", "messages")
    answer_log.complete_from_entry(
        ex, "anthropic", entry(input_tokens=10, output_tokens=5, cache_read_input_tokens=3, cache_creation_input_tokens=2)
    )
    assert ex.usage is not None and (ex.usage.input_tokens, ex.usage.cache_read_tokens) == (15, 3)


@pytest.mark.parametrize(
    ("log", "outcome", "status", "has_usage"),
    [
        (entry(429), "provider_error", 429, False),
        (entry(504, details="upstream_response_timeout"), "envoy_error", 504, False),
        (entry(0, dc=True), "client_disconnected", 499, False),
        (entry(200, dc=True, prompt_tokens=3, completion_tokens=1), "client_disconnected", 200, True),
        (entry(200), "ok", 200, False),  # an answer without usage (a provider that sends none)
    ],
)
def test_an_entrys_outcome(log: Any, outcome: str, status: int, has_usage: bool) -> None:
    gw = build()
    ex = exchange(gw)
    answer_log.complete_from_entry(ex, "openai", log)
    assert (ex.outcome, ex.status, ex.usage is not None) == (outcome, status, has_usage)


def test_parked_exchanges_complete_once_from_their_entry_or_are_given_up() -> None:
    gw = build()
    parked = answer_log.AnswerLog()
    stage = Recorder()
    ex = exchange(gw)
    parked.park(ex, [stage], "openai", 1.0)
    assert ex.request_id in parked
    assert asyncio.run(parked.on_entry(entry(prompt_tokens=1, completion_tokens=1)))
    assert stage.seen == [ex] and ex.request_id not in parked
    assert not asyncio.run(parked.on_entry(entry()))  # nothing waits for it any more
    late = exchange(gw)
    parked.park(late, [stage], "openai", 1.0)
    asyncio.run(parked.sweep(now=late.started + 1.0))  # not overdue yet
    assert late.request_id in parked
    asyncio.run(parked.sweep(now=time.monotonic() + 62.0))
    assert late.request_id not in parked and stage.seen[-1] is late
    assert (late.outcome, late.error) == ("gateway_error", answer_log.LOST)


def test_a_parked_request_goes_on_marked_for_the_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = build()
    parked = answer_log.AnswerLog()
    monkeypatch.setattr(answer_log, "PARKED", parked)
    ex, reply = exchange(gw), Reply(metadata={REQUEST_ID: "ab" * 16})
    answer_log.park(reply, ex, [], "openai", 120.0)
    assert reply.metadata == {REQUEST_ID: "ab" * 16, ANSWER_LOGGED: "1"} and ex.request_id in parked


def test_envoy_gets_the_filter_the_forwarded_flag_the_log_and_the_header(tmp_path: Any) -> None:
    """Rendered only when asked; Envoy itself validates the result."""
    import subprocess

    from extproc.render import dump, render
    from extproc.supervisor import envoy_binary

    bootstrap = render(build())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    at = names.index("envoy.filters.http.json_to_metadata")
    assert names[at + 1] == "envoy.filters.http.ext_proc"  # read before the router phase sees the request
    options = hcm["http_filters"][at + 1]["typed_config"]["metadata_options"]
    assert "io.llm_gateway.request" in options["forwarding_namespaces"]["untyped"]
    (grpc_log,) = [a for a in hcm["access_log"] if a["name"] == "envoy.access_loggers.http_grpc"]
    logged = grpc_log["filter"]["or_filter"]["filters"][1]["metadata_filter"]
    assert logged["match_if_key_not_found"] is False
    vhost = hcm["route_config"]["virtual_hosts"][0]
    assert vhost["response_headers_to_add"][0]["header"]["key"] == "x-gateway-request-id"
    out = tmp_path / "envoy.yaml"
    out.write_text(dump(bootstrap))
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = dump(render(build(CONFIG.replace("answersFromAccessLog: true", "answersFromAccessLog: false"))))
    assert "json_to_metadata" not in plain and "io.llm_gateway.request" not in plain
