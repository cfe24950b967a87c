"""Telemetry in process: masking, CEL fields, the metrics an exchange moves, the config's shapes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from extproc import gateway
from extproc.config.loader import ConfigError, load, parse_text
from extproc.pipeline.exchange import AttemptRecord, Exchange
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stages.usage_record import record_of
from extproc.telemetry import redact
from extproc.telemetry.fields import FieldSet, context, label_value, variables_of
from extproc.telemetry.metrics import OVERFLOW, TOKEN_BUCKETS, GatewayMetrics
from extproc.telemetry.prices import Cost, Price
from extproc.telemetry.runtime import Telemetry
from extproc.translate.usage import Usage

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
config:
  metrics:
    fields:
      add: {user_id: jwt.sub, team: 'apiKey.team'}
  logging:
    fields:
      add: {model: llm.requestModel, who: identity.user_id, prompt: llm.prompt, ua: 'request.headers["user-agent"]'}
binds:
- port: 3000
  listeners:
  - routes:
    - name: chat
      matches: [{path: {pathPrefix: /chat}}]
      backends: [{ai: {name: openai, provider: {openAI: {}}, hostOverride: "127.0.0.1:9"}}]
      policies: {backendAuth: {key: sk-the-provider-key-0001}}
    - name: fo
      matches: [{path: {pathPrefix: /fo}}]
      backends:
      - ai:
          groups:
          - providers: [{name: primary, provider: {anthropic: {model: claude-3-5-haiku-latest}}, hostOverride: "127.0.0.1:9"}]
          - providers: [{name: secondary, provider: {openAI: {model: gpt-4o}}, hostOverride: "127.0.0.1:9"}]
"""


def build() -> tuple[gateway.Gateway, Telemetry]:
    gw = gateway.build(parse_text(CONFIG).config)
    t = Telemetry.build(gw.config.config)
    t.prices.replace({"gpt-4o": Price(2.5e-06, 1e-05, 1.25e-06)})
    return gw, t


def exchange(gw: gateway.Gateway, route: str = "chat", **kw: object) -> Exchange:
    r = gw.routes_by_id[route]
    ex = Exchange(request_id="ab" * 16, route=r, api="completions", method="POST", path=f"/{route}/v1/chat/completions")
    ex.llm = LLMRequest("completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5})
    ex.upstream = r.direct_upstream or r.backends[0].upstreams[-1]
    ex.status, ex.outcome = 200, "ok"
    ex.usage = Usage(input_tokens=100, output_tokens=20, cache_read_tokens=40)
    ex.response_model = "gpt-4o"
    ex.attempts = [AttemptRecord(1, ex.upstream.name, "answered", 200)]
    ex.started = 10.0
    ex.first_token = 10.5
    ex.ended = 12.0
    for k, v in kw.items():
        setattr(ex, k, v)
    return ex


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in samples(metrics).items() if n == name and labels.items() <= dict(ls).items()
    )


# --- masking -----------------------------------------------------------------------------------------


def test_known_secrets_and_credential_shapes_are_masked() -> None:
    redact.set_known_secrets(["plain-provider-secret-value", "short"])
    text = (
        "key plain-provider-secret-value; Bearer abcdefghijklmnop; sk-ant-api03-xyzxyzxyz; "
        "AIzaSyA-1234567890abcdefghij; eyJhbGciOi.eyJzdWIiOiJ1In0.sig; /v1/models?key=AIzaSecret&x=1; "
        "short stays"
    )
    masked = redact.mask(text)
    for secret in ("plain-provider-secret-value", "abcdefghijklmnop", "sk-ant-api03", "AIzaSyA", "eyJhbGci", "AIzaSecret"):
        assert secret not in masked, (secret, masked)
    assert "Bearer [REDACTED]" in masked and "&x=1" in masked and "short stays" in masked
    redact.set_known_secrets([])


def test_a_masked_text_remembered_is_masked_again_when_the_known_secrets_change() -> None:
    """mask() remembers its results (texts repeat from request to request); a secret learnt later
    (a reload) must not find the old, unmasked result."""
    redact.set_known_secrets([])
    text = "upstream said: token hunter2-the-key"
    assert redact.mask(text) == text
    redact.set_known_secrets(["hunter2-the-key"])
    assert redact.mask(text) == "upstream said: token [REDACTED]"
    long = "x" * 600 + " hunter2-the-key"  # past the remembered length: masked each time
    assert redact.mask(long).endswith("[REDACTED]")
    redact.set_known_secrets([])


def test_request_headers_for_cel_hide_credentials() -> None:
    headers = {":path": "/x", "authorization": "Bearer abc", "x-api-key": "k", "x-team": "red", "x-gw-user": "u"}
    assert redact.safe_headers(headers) == {"authorization": "[REDACTED]", "x-api-key": "[REDACTED]", "x-team": "red"}


# --- CEL fields --------------------------------------------------------------------------------------


def test_seed_logging_fields_evaluate_and_missing_keys_are_null() -> None:
    seed = load(ROOT / "tests" / "configs" / "metrics-testing.yaml").config.config
    fields = FieldSet(seed.logging.fields.add)
    gw, _ = build()
    ex = exchange(gw)
    ex.identity = {"user_id": "alice", "jwt": {"sub": "alice", "name": "Alice", "iss": "https://idp", "aud": "gw"}}
    out = fields.evaluate(context(variables_of(ex, None, fields.variables, fields.wants_prompt)))
    assert out["user_id"] == "alice" and out["user_name"] == "Alice" and out["authenticated"] is True
    assert out["token_issuer"] == "https://idp" and out["token_audience"] == "gw"
    assert out["jwt_act"] is None  # no such claim: null, the request unaffected
    assert out["model"] == "gpt-4o" and out["provider"] == "openai"
    assert out["prompt"] == [{"role": "user", "content": "hi"}]
    anonymous = exchange(gw)
    out = fields.evaluate(context(variables_of(anonymous, None, fields.variables, fields.wants_prompt)))
    assert out["user_id"] is None and out["authenticated"] is None and out["model"] == "gpt-4o"


def test_prompt_is_built_only_when_an_expression_names_it() -> None:
    gw, _ = build()
    ex = exchange(gw)
    assert "prompt" not in variables_of(ex, None, frozenset({"llm"}), False)["llm"]
    assert FieldSet({"a": "llm.requestModel"}).wants_prompt is False


def test_label_values() -> None:
    assert [label_value(v) for v in (None, True, 3, "x", ["a"])] == ["", "true", "3", "x", '["a"]']


def test_log_line_has_cost_fields_and_masks_free_text() -> None:
    gw, t = build()
    redact.set_known_secrets(["sk-the-provider-key-0001"])
    ex = exchange(gw, error="provider said: bad key sk-the-provider-key-0001", headers={"user-agent": "sdk/1"})
    ex.path = "/chat/v1/chat/completions?key=AIzaLeak1234567890abcd"
    cost = t.cost_of(ex)
    line = t.log_line(record_of(ex, cost), t.context_of(ex, cost))
    assert line["cost_status"] == "priced"
    assert line["cost_usd"] == pytest.approx(60 * 2.5e-06 + 40 * 1.25e-06 + 20 * 1e-05)
    assert "sk-the-provider-key" not in line["error"] and "AIzaLeak" not in line["path"]
    assert line["model"] == "gpt-4o" and line["who"] is None and line["ua"] == "sdk/1"
    redact.set_known_secrets([])


# --- metrics -----------------------------------------------------------------------------------------


def test_one_exchange_moves_each_metric_once() -> None:
    gw, t = build()
    ex = exchange(gw, stream=True, identity={"jwt": {"sub": "u1"}, "api_key": {"team": "red"}})
    cost = t.cost_of(ex)
    t.metrics.observe(ex, cost, t.label_values(t.context_of(ex, cost)))
    m = t.metrics
    labels = {"route": "chat", "provider": "openai", "gen_ai_provider_name": "openai", "user_id": "u1", "team": "red"}
    assert value(m, "agentgateway_requests_total", status="200", outcome="ok", **labels) == 1
    assert value(m, "agentgateway_gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 100
    assert value(m, "agentgateway_gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 20
    assert value(m, "agentgateway_gen_ai_client_token_usage_sum", gen_ai_token_type="input_cache_read") == 40
    assert value(m, "agentgateway_gen_ai_client_token_usage_count", gen_ai_token_type="input_cache_write") == 0
    assert value(m, "agentgateway_gen_ai_server_request_duration_sum", **labels) == pytest.approx(2.0)
    assert value(m, "agentgateway_gen_ai_server_time_to_first_token_sum") == pytest.approx(0.5)
    assert value(m, "agentgateway_gen_ai_server_time_per_output_token_sum") == pytest.approx(1.5 / 19)
    assert value(m, "agentgateway_gen_ai_client_cost_usd_total") == pytest.approx(cost.usd)
    assert value(m, "agentgateway_cost_catalog_lookups_total", status="found") == 1
    # Buckets are the OTel GenAI ones.
    token_les = {float(dict(ls)["le"]) for (n, ls) in samples(m) if n.endswith("token_usage_bucket")}
    assert token_les == {*map(float, TOKEN_BUCKETS), float("inf")}
    assert not any(n.endswith("_created") for n, _ in samples(m))


def test_failover_and_unpriced_models_are_counted() -> None:
    gw, t = build()
    r = gw.routes_by_id["fo"]
    primary, secondary = r.backends[0].upstreams
    ex = exchange(gw, "fo", upstream=secondary, response_model="gpt-4o-2099-01-01")
    ex.attempts = [AttemptRecord(1, "primary", "retried"), AttemptRecord(2, "secondary", "answered", 200)]
    t.metrics.observe(ex, t.cost_of(ex), ("", ""))
    unpriced = exchange(gw, "fo", upstream=primary, response_model="claude-3-5-haiku-20241022")
    t.metrics.observe(unpriced, t.cost_of(unpriced), ("", ""))
    m = t.metrics
    assert value(m, "agentgateway_retries_total", route="fo", provider="primary") == 1
    assert value(m, "agentgateway_failovers_total", route="fo", provider="secondary") == 1
    # Priced by the model asked of the provider (gpt-4o) when the answering one is not in the table.
    assert value(m, "agentgateway_cost_catalog_lookups_total", status="found", gen_ai_request_model="gpt-4o") == 1
    assert value(m, "agentgateway_cost_catalog_lookups_total", status="missing", provider="primary") == 1


def test_cardinality_limit_folds_new_label_sets_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    gw, _ = build()
    metrics = GatewayMetrics("gw", ("user",), limit=10)
    with caplog.at_level(logging.WARNING, "gateway.metrics"):
        for n in range(15):
            ex = exchange(gw, response_model=f"model-{n}")
            metrics.observe(ex, Cost(None, "unpriced"), (f"user-{n}",))
    assert value(metrics, "gw_requests_total") == 15  # nothing lost
    assert value(metrics, "gw_requests_total", user=OVERFLOW, gen_ai_response_model=OVERFLOW) == 5
    assert caplog.text.count("cardinalityLimit") == 1


def test_prefix_is_configurable() -> None:
    metrics = GatewayMetrics("", ())
    gw, _ = build()
    metrics.observe(exchange(gw), Cost(None, "unpriced"), ())
    names = {n for n, _ in samples(metrics)}
    assert "gen_ai_client_token_usage_sum" in names and "requests_total" in names


_WORKER = """
import sys
from extproc import gateway
from extproc.config.loader import parse_text
sys.path.insert(0, {root!r})
from tests.unit.test_telemetry import CONFIG, exchange
from extproc.telemetry.metrics import GatewayMetrics
from extproc.telemetry.prices import Cost
gw = gateway.build(parse_text(CONFIG).config)
m = GatewayMetrics("agentgateway", ())
for _ in range({n}):
    m.observe(exchange(gw), Cost(None, "unpriced"), ())
"""


def test_multiprocess_mode_sums_every_workers_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes write, a third reads: the counts are the sum (prometheus-client multiprocess)."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", _WORKER.format(root=str(ROOT), n=n)], check=True, env=env, cwd=ROOT)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = GatewayMetrics("agentgateway", ()).exposition().decode()
    total = sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "agentgateway_requests_total"
    )
    assert total == 7


# --- config ------------------------------------------------------------------------------------------


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_text(text, "gw.yaml")
    return str(exc.value)


ROUTE = """
binds:
- port: 3000
  listeners:
  - routes:
    - backends: [{ai: {name: a, provider: {openAI: {}}}}]
"""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("metrics: {fields: {add: {user: 'jwt.sub +'}}}", "config.metrics.fields.add: Value error, user"),
        ("metrics: {fields: {add: {route: 'jwt.sub'}}}", "one of the gateway's own labels"),
        ("metrics: {fields: {add: {user.id: 'jwt.sub'}}}", "cannot be a Prometheus label name"),
        ("metrics: {prefix: 'my-gw'}", "cannot start a Prometheus metric name"),
        ("logging: {fields: {add: {request_id: '1'}}}", "joins log lines"),
        ("logging: {format: text}", "config.logging.format"),
        ("tracing: {otlpEndpoint: 'http://x:4317', randomSampling: 'often'}", "use true, false or a ratio"),
        ("tracing: {randomSampling: 0.5}", "config.tracing.otlpEndpoint: required field is missing"),
        ("cost: {reloadInterval: soon}", "config.cost.reloadInterval"),
    ],
)
def test_telemetry_config_errors_name_the_field(config: str, message: str) -> None:
    text = "config:\n  " + config + "\n" + ROUTE
    assert message.replace("Value error, ", "") in errors_of(text).replace("Value error, ", "")


def test_seed_metrics_testing_config_loads_unchanged() -> None:
    cfg = load(ROOT / "tests" / "configs" / "metrics-testing.yaml").config.config
    assert cfg.tracing is not None and cfg.tracing.random_sampling is True
    assert set(cfg.metrics.fields.add) == {"user_id", "user_name"}
    assert cfg.metrics.prefix == "agentgateway"


def test_cel_variables_are_pruned_to_what_expressions_name() -> None:
    from extproc.telemetry.fields import needs_of, prune

    needs = needs_of(['llm.requestModel', 'jwt["sub"]', 'request.headers["X-Team"]', "size(apiKey) > 0"])
    assert needs == {"llm": {"requestModel"}, "jwt": {"sub"}, "request": {"headers"}, "request.headers": {"x-team"}, "apiKey": None}
    full = {
        "llm": {"requestModel": "m", "prompt": ["big"]},
        "jwt": {"iss": "i"},
        "request": {"headers": {"x-team": "red", "cookie": "[REDACTED]"}, "path": "/p"},
        "apiKey": {"a": 1, "b": 2},
    }
    assert prune(full, needs) == {
        "llm": {"requestModel": "m"},
        "jwt": {},  # jwt.sub named but absent: still absent, so the field is null
        "request": {"headers": {"x-team": "red"}},
        "apiKey": {"a": 1, "b": 2},
    }
    # Evaluated through the pruned context, results are the same as through the whole one.
    fields = FieldSet({"m": "llm.requestModel", "s": 'jwt["sub"]', "t": 'request.headers["x-team"]', "k": "size(apiKey)"})
    pruned, whole = fields.evaluate(context(full, fields.needs)), fields.evaluate(context(full))
    assert pruned == whole == {"m": "m", "s": None, "t": "red", "k": 2}
