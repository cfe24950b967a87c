"""The rendered Envoy config is accepted by the real Envoy and has the failover shape."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from extproc import gateway
from extproc.config.loader import load
from extproc.render import dump, render
from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "policies" / "gateway.yaml", ROOT / "tests" / "configs" / "seed-model-failover.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_real_envoy_validates_rendered_config(path: Path, tmp_path: Path) -> None:
    rendered = render(gateway.build(load(path).config))
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(rendered))
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_groups_become_priority_levels() -> None:
    gw = gateway.build(load(CONFIGS[0]).config)
    rendered = render(gw)
    failover = next(r for r in gw.routes if r.name == "failover")
    cluster = next(
        c for c in rendered["static_resources"]["clusters"] if c["name"] == failover.backends[0].cluster
    )
    levels = [
        (e["priority"], [x["endpoint"]["hostname"] for x in e["lb_endpoints"]])
        for e in cluster["load_assignment"]["endpoints"]
    ]
    assert levels == [(0, ["127.0.0.1:9100"]), (1, ["127.0.0.1:9100"])]


def test_seed_failover_route_retries_to_another_endpoint() -> None:
    gw = gateway.build(load(CONFIGS[1]).config)
    rendered = render(gw)
    cluster = next(
        c for c in rendered["static_resources"]["clusters"] if c["name"] == gw.routes[0].backends[0].cluster
    )
    (level,) = cluster["load_assignment"]["endpoints"]
    assert [x["endpoint"]["hostname"] for x in level["lb_endpoints"]] == [
        "api.anthropic.com",
        "api.openai.com",
    ]
    listener = rendered["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    retry = route["retry_policy"]
    assert retry["num_retries"] == 1
    assert retry["retriable_status_codes"] == [400, 401, 403, 404, 429, 500, 502, 503, 504]
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.buffer",  # maxRequestBytes, before authz can stall a chunked upload
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.json_to_metadata",  # the stream flag first (limits.answersFromAccessLog)
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]


def test_no_secret_in_rendered_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-appear")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-appear")
    text = yaml.safe_dump(render(gateway.build(load(CONFIGS[1]).config)))
    assert "must-not-appear" not in text


def _cluster(rendered: dict, name: str) -> dict:
    return next(c for c in rendered["static_resources"]["clusters"] if c["name"] == name)


def _upstream_filters(cluster: dict) -> list[str]:
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    return [f["name"] for f in options.get("http_filters", [])]


def test_only_multi_provider_routes_run_the_per_attempt_phase() -> None:
    gw = gateway.build(load(CONFIGS[0]).config)
    rendered = render(gw)
    by_name = {r.name: r for r in gw.routes}
    # One provider: the router phase does the egress work, no ext_proc stream per attempt.
    anthropic = by_name["anthropic"]
    assert anthropic.direct_upstream is not None
    assert _upstream_filters(_cluster(rendered, anthropic.backends[0].cluster)) == []
    # Two groups: a retry may reach another wire format, so each attempt is translated.
    failover = by_name["failover"]
    assert failover.direct_upstream is None
    assert _upstream_filters(_cluster(rendered, failover.backends[0].cluster)) == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.upstream_codec",
    ]


def test_envoy_error_shape_follows_recorded_client_api() -> None:
    """A translated request's :path is the provider's; the error shape must follow the client."""
    rendered = render(gateway.build(load(CONFIGS[0]).config))
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    mapper = next(
        m
        for m in hcm["local_reply_config"]["mappers"]
        if m.get("body_format_override", {}).get("json_format", {}).get("type")
    )
    text = yaml.safe_dump(mapper["filter"])
    assert "metadata_filter" in text and "io.llm_gateway" in text


# --- golden bootstraps -----------------------------------------------------------------------------

GOLDEN = ROOT / "envoy" / "golden"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_golden_bootstrap_is_what_render_prints(path: Path) -> None:
    """The documented command (envoy/README.md) regenerates the golden file; review its diff."""
    # OTEL_EXPORTER_OTLP_* would turn tracing on (config/telemetry.py tracing_of): not in goldens.
    env = {k: v for k, v in os.environ.items() if k != "MOCK_HOST" and not k.startswith("OTEL_EXPORTER_OTLP")}
    rel = path.relative_to(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "extproc", "render", str(rel)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    golden = GOLDEN / path.name
    diff = "".join(
        difflib.unified_diff(
            golden.read_text().splitlines(keepends=True),
            out.stdout.splitlines(keepends=True),
            str(golden),
            "render",
        )
    )
    regenerate = f"env -u MOCK_HOST .venv/bin/python -m extproc render {rel} -o envoy/golden/{path.name}"
    assert not diff, f"the rendered bootstrap changed; if intended, run `{regenerate}`\n{diff[:6000]}"


def test_golden_text_is_the_in_process_render(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOCK_HOST", raising=False)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for path in CONFIGS:
        assert dump(render(gateway.build(load(path).config))) == (GOLDEN / path.name).read_text()


# --- the parts the issue fixed -------------------------------------------------------------------------


def _default() -> tuple[gateway.Gateway, dict]:
    gw = gateway.build(load(CONFIGS[0]).config)
    return gw, render(gw)


def _hcm(rendered: dict) -> dict:
    return rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _envoy_routes(rendered: dict, twins: bool = False) -> list[dict]:
    """The Envoy routes, without the streams' relay twins unless asked (``<name>#relay``)."""
    routes = [r for vh in _hcm(rendered)["route_config"]["virtual_hosts"] for r in vh["routes"]]
    return [r for r in routes if twins or not r["name"].endswith("#relay")]


def test_backend_and_sidecar_clusters_do_not_cap_retries_at_envoys_default() -> None:
    gw, rendered = _default()
    limit = gw.limits.max_connections
    assert limit >= 10000
    (monitor,) = rendered["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == limit
    for cluster in rendered["static_resources"]["clusters"]:
        if cluster["name"] in ("gw_admin", "gw_metrics"):  # scrapes, not requests
            continue
        (threshold,) = cluster["circuit_breakers"]["thresholds"]
        assert threshold["max_retries"] >= threshold["max_requests"] >= limit, cluster["name"]
        assert threshold["max_pending_requests"] >= limit and threshold["max_connections"] >= limit


def test_router_ext_proc_attributes() -> None:
    _, rendered = _default()
    ext_proc = next(f for f in _hcm(rendered)["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    config = ext_proc["typed_config"]
    assert config["request_attributes"] == ["xds.route_name"]
    assert config["response_attributes"] == [
        "response.code_details",
        "xds.upstream_host_metadata",
        "upstream.request_attempt_count",
    ]
    assert config["allow_mode_override"] is True
    assert config["processing_mode"]["response_header_mode"] == "SKIP"


def test_access_log_prints_the_gateway_request_id_and_the_clients_apart() -> None:
    _, rendered = _default()
    log, rejected = _hcm(rendered)["access_log"]  # Envoy's line; the refused ones to extproc
    assert rejected["name"] == "envoy.access_loggers.http_grpc"
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["id"] == "%DYNAMIC_METADATA(io.llm_gateway:request_id)%"
    assert fields["client_id"] == "%DYNAMIC_METADATA(io.llm_gateway:client_request_id)%"
    assert fields["envoy_id"] == "%REQ(X-REQUEST-ID)%"
    assert fields["details"] == "%RESPONSE_CODE_DETAILS%"  # what clients are not told


def test_ext_authz_is_disabled_on_every_route_without_an_auth_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    _, rendered = _default()
    routes = _envoy_routes(rendered)
    assert routes and all(
        r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True for r in routes
    )
    # A route with an auth policy gets the check back (the filter itself fails closed).
    monkeypatch.setattr(gateway.ResolvedRoute, "needs_authz", property(lambda r: r.name == "openai"))
    _, rendered = _default()
    by_name = {
        r["name"]: r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        for r in _envoy_routes(rendered)
    }
    # It names the gateway route (the sidecar's policies are by route) and carries the whole body.
    assert by_name["openai"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {
            "context_extensions": {"route": "openai"},
            "with_request_body": {
                "max_request_bytes": _default()[0].limits.max_request_bytes,
                "allow_partial_message": False,
                "pack_as_bytes": True,
            },
        },
    }
    assert by_name["anthropic"]["disabled"] is True
    authz = next(f for f in _hcm(rendered)["http_filters"] if f["name"] == "envoy.filters.http.ext_authz")
    assert authz["typed_config"]["failure_mode_allow"] is False


def test_client_headers_are_removed_by_prefix_before_anything_else() -> None:
    _, rendered = _default()
    (early,) = _hcm(rendered)["early_header_mutation_extensions"]
    mutations = early["typed_config"]["mutations"]
    removed = [m["remove_on_match"]["key_matcher"]["prefix"] for m in mutations if "remove_on_match" in m]
    assert removed == ["x-envoy-", "x-gw-"]
    # Then only the client's x-request-id is copied, into the one x-gw- header a client may fill.
    assert mutations[: len(removed)] == [m for m in mutations if "remove_on_match" in m]
    (copy,) = [m["append"] for m in mutations[len(removed) :]]
    assert copy["header"] == {"key": "x-gw-client-request-id", "value": "%REQ(x-request-id)%"}


def test_route_names_and_endpoint_ids_come_from_config_names() -> None:
    gw, rendered = _default()
    assert (
        [r["name"] for r in _envoy_routes(rendered)]
        == [r.id for r in gw.routes]
        == [r.name for r in gw.routes]
    )
    cluster = _cluster(rendered, next(r for r in gw.routes if r.name == "failover").backends[0].cluster)
    ids = [
        e["metadata"]["filter_metadata"]["io.llm_gateway"]["upstream"]
        for level in cluster["load_assignment"]["endpoints"]
        for e in level["lb_endpoints"]
    ]
    assert ids == ["failover/primary", "failover/secondary"]


CONFIG_WITH_FIELDS = """
binds:
- port: 3000
  listeners:
  - routes:
    - name: plain
      matches: [{path: {pathPrefix: /a}}, {path: {pathPrefix: /b}}]
      backends: [{ai: {name: p, provider: {openAI: {}}, hostOverride: "10.0.0.1:8000"}}]
      policies: {urlRewrite: {authority: {full: "llm.internal:8443"}}}
  - hostname: api.example.com
    routes:
    - name: tls
      backends:
      - ai:
          groups:
          - providers:
            - name: verified
              provider: {openAI: {}}
              hostOverride: "vllm.internal:8443"
              policies: {backendTLS: {sni: vllm.example.com}}
            - name: self-signed
              provider: {openAI: {}}
              hostOverride: "127.0.0.1:8443"
              policies: {backendTLS: {insecureSkipVerify: true}}
            - name: public
              provider: {anthropic: {}}
"""


def _fields() -> tuple[gateway.Gateway, dict]:
    from extproc.config.loader import parse_text

    gw = gateway.build(parse_text(CONFIG_WITH_FIELDS).config)
    return gw, render(gw)


def test_listener_hostnames_are_virtual_hosts() -> None:
    _, rendered = _fields()
    hcm = _hcm(rendered)
    assert [
        (v["domains"], [r["name"] for r in v["routes"]]) for v in hcm["route_config"]["virtual_hosts"]
    ] == [
        (["*"], ["plain#relay", "plain#1#relay", "plain", "plain#1"]),  # the relay twins first
        (["api.example.com"], ["tls#relay", "tls"]),
    ]
    assert hcm["strip_any_host_port"] is True


def test_authority_rewrite_replaces_the_providers_host() -> None:
    _, rendered = _fields()
    plain = next(r for r in _envoy_routes(rendered) if r["name"] == "plain")["route"]
    assert plain["host_rewrite_literal"] == "llm.internal:8443" and "auto_host_rewrite" not in plain
    tls = next(r for r in _envoy_routes(rendered) if r["name"] == "tls")["route"]
    assert tls["auto_host_rewrite"] is True and "host_rewrite_literal" not in tls


def test_tls_settings_are_per_endpoint() -> None:
    gw, rendered = _fields()
    cluster = _cluster(rendered, gw.routes_by_id["tls"].backends[0].cluster)
    profile = {
        e["metadata"]["filter_metadata"]["io.llm_gateway"]["upstream"]: e["metadata"]["filter_metadata"][
            "envoy.transport_socket_match"
        ]["tls"]
        for level in cluster["load_assignment"]["endpoints"]
        for e in level["lb_endpoints"]
    }
    sockets = {m["name"]: m["transport_socket"]["typed_config"] for m in cluster["transport_socket_matches"]}

    verified = sockets[profile["tls/verified"]]
    assert verified["sni"] == "vllm.example.com"
    validation = verified["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"].endswith(".crt")
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "vllm.example.com"}}
    ]

    skipped = sockets[profile["tls/self-signed"]]
    assert skipped["common_tls_context"] == {} and "sni" not in skipped  # no checks; an IP is never SNI

    public = sockets[profile["tls/public"]]
    assert public["sni"] == "api.anthropic.com"
    assert public["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0][
        "matcher"
    ] == {"exact": "api.anthropic.com"}
    assert len({profile["tls/verified"], profile["tls/self-signed"], profile["tls/public"]}) == 3


def test_config_with_fields_is_valid_for_envoy(tmp_path: Path) -> None:
    _, rendered = _fields()
    out = tmp_path / "envoy.yaml"
    out.write_text(dump(rendered))
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_reply_envoy_makes_is_fixed_words_in_both_client_shapes() -> None:
    """No formatter in any body (``%RESPONSE_CODE_DETAILS%`` once showed Envoy's internals), every
    flag Envoy answers with covered (overflow too), each case in Anthropic's shape and OpenAI's."""
    _, rendered = _default()
    mappers = _hcm(rendered)["local_reply_config"]["mappers"]
    text = yaml.safe_dump([m["body_format_override"] for m in mappers])
    assert "%" not in text
    flags = {f for m in mappers for f in yaml.safe_dump(m["filter"]).split() if f.isupper() and len(f) <= 5}
    envoys = {"UT", "UF", "UC", "UH", "UO", "URX", "NR", "OM", "DF", "RL", "UPE", "LR", "UMSDR", "NC"}
    assert envoys | {"SI"} <= flags
    shapes = [("type" in m["body_format_override"]["json_format"]) for m in mappers]
    assert shapes == [True, False] * (len(mappers) // 2)  # Anthropic's first (it is the narrower match)
    codes = [m["body_format_override"]["json_format"]["error"].get("code") for m in mappers[1::2]]
    assert all(code and code.islower() for code in codes), codes


def test_stream_limits_have_envoy_backstops_and_the_router_phase_may_set_a_streams_timeout() -> None:
    """The route timeout is a whole answer's (requestTimeout); a stream's comes from the router phase
    (x-envoy-upstream-rq-timeout-ms, so its ext_proc may set x-envoy- headers). Envoy's idle timer
    fires only after both the request timeout and the stream idle timeout, a sidecar timeout later."""
    gw, rendered = _default()
    route = _envoy_routes(rendered)[0]["route"]
    assert route["timeout"] == "120.000s"
    idle = max(120.0, gw.limit_seconds("stream_idle_timeout")) + gw.sidecar_timeout
    assert route["idle_timeout"] == f"{idle:.3f}s"
    ext_proc = next(f for f in _hcm(rendered)["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext_proc["typed_config"]["mutation_rules"]["allow_envoy"] is True


# --- the stream relay (extproc/stream_relay.py; README "When a provider cuts a stream") ---------------


def test_each_route_has_a_relay_twin_first_matched_only_by_the_router_phases_header() -> None:
    _, rendered = _default()
    for vh in _hcm(rendered)["route_config"]["virtual_hosts"]:
        names = [r["name"] for r in vh["routes"]]
        twins = [n for n in names if n.endswith("#relay")]
        assert names[: len(twins)] == twins, "twins come first: the path may be the provider's by then"
        plain = {r["name"]: r for r in vh["routes"] if not r["name"].endswith("#relay")}
        assert sorted(t.removesuffix("#relay") for t in twins) == sorted(plain)
        for twin in vh["routes"][: len(twins)]:
            name = twin["name"].removesuffix("#relay")
            assert twin["match"] == {
                "prefix": "/",
                "headers": [{"name": "x-gw-relay", "string_match": {"exact": name}}],
            }
            assert twin["request_headers_to_remove"] == ["x-gw-relay", "x-forwarded-proto"]
            action, base = twin["route"], plain[name]["route"]
            clusters = action.get("weighted_clusters", {}).get("clusters") or [{"name": action["cluster"]}]
            base_clusters = base.get("weighted_clusters", {}).get("clusters") or [{"name": base["cluster"]}]
            assert [c["name"] for c in clusters] == [c["name"] + "_relay" for c in base_clusters]
            assert {k: v for k, v in action.items() if k not in ("cluster", "weighted_clusters")} == {
                k: v for k, v in base.items() if k not in ("cluster", "weighted_clusters")
            }  # the same timeouts, retries (failover) and host rewrite
            assert twin["typed_per_filter_config"] == plain[name]["typed_per_filter_config"]


def test_a_relay_cluster_is_its_backend_with_every_endpoint_at_the_relay_in_plain_http() -> None:
    _, rendered = _default()
    clusters = {c["name"]: c for c in rendered["static_resources"]["clusters"]}
    relayed = [n for n in clusters if n.endswith("_relay")]
    assert relayed
    for name in relayed:
        relay, base = clusters[name], clusters[name.removesuffix("_relay")]
        assert "transport_socket_matches" not in relay  # plain HTTP to the relay; it does the TLS
        levels = relay["load_assignment"]["endpoints"]
        assert [e["priority"] for e in levels] == [
            e["priority"] for e in base["load_assignment"]["endpoints"]
        ]
        for level, base_level in zip(levels, base["load_assignment"]["endpoints"], strict=True):
            for ep, base_ep in zip(level["lb_endpoints"], base_level["lb_endpoints"], strict=True):
                assert ep["endpoint"]["address"] == {
                    "socket_address": {"address": "127.0.0.1", "port_value": 9003}
                }
                assert ep["endpoint"]["hostname"] == base_ep["endpoint"]["hostname"]  # the Host header
                ours = ep["metadata"]["filter_metadata"]["io.llm_gateway"]
                assert ours == {**base_ep["metadata"]["filter_metadata"]["io.llm_gateway"], "relay": "1"}
        options = relay["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert options["common_http_protocol_options"] == {"idle_timeout": "60s"}


def test_without_the_stream_relay_nothing_of_it_is_rendered() -> None:
    raw = yaml.safe_load(CONFIGS[0].read_text())
    raw.setdefault("config", {}).setdefault("limits", {})["streamRelay"] = False
    from extproc.config.loader import parse_text

    rendered = render(gateway.build(parse_text(yaml.safe_dump(raw)).config))
    assert not [r for r in _envoy_routes(rendered, twins=True) if r["name"].endswith("#relay")]
    assert not [c for c in rendered["static_resources"]["clusters"] if c["name"].endswith("_relay")]
