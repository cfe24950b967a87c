"""Config loading: the seeds' shape loads; every error names file, line and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from extproc import gateway
from extproc.config.loader import ConfigError, load, parse_text

ROOT = Path(__file__).resolve().parents[2]


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "gw.yaml")
    return [str(i) for i in info.value.issues]


def test_default_config_loads() -> None:
    loaded = load(ROOT / "policies" / "gateway.yaml")
    gw = gateway.build(loaded.config)
    names = [r.name for r in gw.routes]
    assert names == [
        "openai",
        "anthropic",
        "gemini",
        "bedrock",
        "azure",
        "vertex",
        "assistant",
        "failover",
        "default",
    ]
    failover = gw.routes[names.index("failover")]
    assert [u.priority for u in failover.backends[0].upstreams] == [0, 1]
    assert failover.retry_attempts == 2


def test_seed_failover_config_loads_unchanged() -> None:
    loaded = load(ROOT / "tests" / "configs" / "seed-model-failover.yaml")
    gw = gateway.build(loaded.config)
    (route,) = gw.routes
    assert route.name == "failover-ai"
    kinds = [(u.name, u.kind, u.model, u.priority) for u in route.backends[0].upstreams]
    # One group of two: the same priority; a retry moves to the other endpoint (previous_hosts).
    assert kinds == [
        ("primary-model", "anthropic", "claude-3-5-haiku-latest", 0),
        ("second-model", "openai", "gpt-5", 0),
    ]
    assert route.retry_codes == [400, 401, 403, 404, 429, 500, 502, 503, 504]
    # Real providers: TLS to their public hosts; keys stay references until the sidecar reads them.
    assert route.backends[0].upstreams[0].host == "api.anthropic.com" and route.backends[0].upstreams[0].tls
    assert route.backends[0].upstreams[0].auth_ref == "$ANTHROPIC_API_KEY"


def test_unknown_field_is_named_with_its_line() -> None:
    text = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          provider: {openAI: {}}\n          bogus: 1\n"
    assert errors_of(text) == [
        "gw.yaml:8: binds[0].listeners[0].routes[0].backends[0].ai.bogus: unknown or unsupported field"
    ]


def test_unsupported_policy_is_an_error_not_ignored() -> None:
    text = (
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          provider: {openAI: {}}\n"
        "      policies:\n        mcpAuthorization: {}\n"
    )
    (err,) = errors_of(text)
    assert err.startswith("gw.yaml:9: binds[0].listeners[0].routes[0].policies.mcpAuthorization:")


def test_yaml_syntax_error_has_a_line() -> None:
    (err,) = errors_of("binds:\n- port: 3000\n  listeners: [\n")
    assert err.startswith("gw.yaml:4: invalid YAML")


def test_two_providers_in_one_spec() -> None:
    text = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          provider: {openAI: {}, anthropic: {}}\n"
    (err,) = errors_of(text)
    assert "gw.yaml:7:" in err and "exactly one provider" in err


def test_bad_duration_and_duplicate_port() -> None:
    text = (
        "config:\n  limits:\n    requestTimeout: soon\n"
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai: {provider: {openAI: {}}}\n"
        "- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai: {provider: {openAI: {}}}\n"
    )
    errs = errors_of(text)
    assert "gw.yaml:10: binds[1].port: port 3000 is bound twice" in errs
    assert any(e.startswith("gw.yaml:3: config.limits.requestTimeout: invalid duration") for e in errs)


def test_env_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_HOST", "10.1.2.3")
    text = (
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai:\n          provider: {openAI: {}}\n"
        "          hostOverride: ${UPSTREAM_HOST}:${UPSTREAM_PORT:-8080}\n"
    )
    up = next(iter(gateway.build(parse_text(text).config).upstreams_by_id.values()))
    assert (up.host, up.port, up.tls) == ("10.1.2.3", 8080, False)


def test_check_command_reports_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai: {provider: {openAI: {}}, extra: 1}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "extproc", "check", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert (
        f"{bad}:6: binds[0].listeners[0].routes[0].backends[0].ai.extra: unknown or unsupported field"
        in proc.stderr
    )
    ok = subprocess.run(
        [sys.executable, "-m", "extproc", "check", str(ROOT / "policies" / "gateway.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "ok" in ok.stdout
    assert "  route failover on :3000: failover/primary, failover/secondary\n" in ok.stdout


# --- fields that must act or be refused -------------------------------------------------------------

ONE_ROUTE = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - name: r\n      backends:\n      - ai:\n{ai}{policies}"


def one_route(ai: str, policies: str = "") -> str:
    return ONE_ROUTE.format(ai=ai, policies=policies)


def test_bedrock_guardrails_are_refused_by_name() -> None:
    ai = "          provider: {bedrock: {region: us-east-1, guardrailIdentifier: gr-1, guardrailVersion: '1'}}\n"
    errs = errors_of(one_route(ai))
    fields = sorted(e.split(": ")[1] for e in errs)
    assert fields == [
        "binds[0].listeners[0].routes[0].backends[0].ai.provider.bedrock.guardrailIdentifier",
        "binds[0].listeners[0].routes[0].backends[0].ai.provider.bedrock.guardrailVersion",
    ]
    # Refused still, pointing to the guard that checks texts with a Bedrock guardrail.
    assert all(
        "not supported; check requests" in e and "policies.ai.promptGuard.bedrockGuardrails" in e
        for e in errs
    )
    assert all(e.startswith("gw.yaml:8:") for e in errs)


@pytest.mark.parametrize(
    ("authority", "message"),
    [
        ("{port: 8443}", "port"),
        ("{full: a.example, host: b.example}", "exactly one of full, host"),
        ("{bogus: x}", "unknown or unsupported field"),
    ],
)
def test_url_rewrite_authority_shape(authority: str, message: str) -> None:
    ai = "          provider: {openAI: {}}\n"
    (err,) = errors_of(one_route(ai, f"      policies:\n        urlRewrite: {{authority: {authority}}}\n"))
    assert "policies.urlRewrite.authority" in err and message in err, err


def test_url_rewrite_authority_cannot_break_sigv4() -> None:
    ai = "          provider: {bedrock: {region: us-east-1}}\n"
    (err,) = errors_of(one_route(ai, "      policies:\n        urlRewrite: {authority: {full: x.example}}\n"))
    assert "policies.urlRewrite.authority" in err and "Bedrock" in err, err


def test_url_rewrite_authority_is_resolved() -> None:
    ai = "          provider: {openAI: {}}\n"
    gw = gateway.build(
        parse_text(
            one_route(ai, "      policies:\n        urlRewrite: {authority: {host: llm.internal}}\n")
        ).config
    )
    assert gw.routes[0].host_rewrite == "llm.internal"


@pytest.mark.parametrize("hostname", ["foo.*.example", "a b", "*.", "exa*mple.com", "*example.com"])
def test_listener_hostname_must_be_an_envoy_domain(hostname: str) -> None:
    text = f"binds:\n- port: 3000\n  listeners:\n  - hostname: '{hostname}'\n    routes:\n    - backends:\n      - ai: {{provider: {{openAI: {{}}}}}}\n"
    (err,) = errors_of(text)
    assert err.startswith("gw.yaml:4: binds[0].listeners[0].hostname:"), err


def test_group_backends_refuse_backend_level_endpoint_fields() -> None:
    ai = (
        "          hostOverride: 127.0.0.1:9100\n"
        "          groups:\n          - providers:\n            - {name: a, provider: {openAI: {}}}\n"
    )
    (err,) = errors_of(one_route(ai))
    assert "ai.hostOverride" in err and "each provider" in err, err


def test_route_level_backend_tls_applies() -> None:
    ai = "          provider: {openAI: {}}\n          hostOverride: vllm.internal:8443\n"
    text = one_route(
        ai, "      policies:\n        backendTLS: {insecureSkipVerify: true, sni: vllm.example}\n"
    )
    (up,) = gateway.build(parse_text(text).config).upstreams_by_id.values()
    assert up.tls and up.sni == "vllm.example" and up.insecure_skip_verify


def test_default_retriable_codes_cover_provider_overload() -> None:
    from extproc.config.model import Retry

    overload = {429, 500, 502, 503, 504, 529}  # 529: Anthropic's overloaded_error
    assert overload <= set(Retry().codes)
    gw = gateway.build(load(ROOT / "policies" / "gateway.yaml").config)
    failover = next(r for r in gw.routes if r.name == "failover")
    assert overload <= set(failover.retry_codes)
    two_groups = (
        "          groups:\n          - providers:\n            - {name: a, provider: {anthropic: {}}}\n"
        "          - providers:\n            - {name: b, provider: {openAI: {}}}\n"
    )
    (route,) = gateway.build(parse_text(one_route(two_groups)).config).routes
    assert route.retry_attempts == 2 and overload <= set(route.retry_codes)


# --- ids from names ------------------------------------------------------------------------------------


def routes_text(*routes: str, port: int = 3000) -> str:
    return f"binds:\n- port: {port}\n  listeners:\n  - routes:\n" + "".join(routes)


def route(name: str | None, prefix: str, provider: str = "a") -> str:
    head = f"    - name: {name}\n      matches:" if name else "    - matches:"
    return (
        f"{head}\n      - path: {{pathPrefix: {prefix}}}\n"
        f"      backends:\n      - ai:\n          groups:\n          - providers:\n"
        f"            - {{name: {provider}, provider: {{openAI: {{}}}}}}\n"
    )


def test_route_and_upstream_ids_come_from_names() -> None:
    gw = gateway.build(parse_text(routes_text(route("chat", "/chat", "primary"))).config)
    (r,) = gw.routes
    assert r.id == "chat"
    assert [u.id for u in r.backends[0].upstreams] == ["chat/primary"]
    assert gw.routes_by_id["chat"] is r and gw.upstreams_by_id["chat/primary"].name == "primary"


def test_ids_do_not_move_when_routes_are_reordered() -> None:
    one = gateway.build(parse_text(routes_text(route("x", "/x"), route(None, "/y"), route("z", "/z"))).config)
    two = gateway.build(parse_text(routes_text(route("z", "/z"), route("x", "/x"), route(None, "/y"))).config)
    ids = {r.source.matches[0].path.path_prefix: r.id for r in one.routes}
    assert ids == {r.source.matches[0].path.path_prefix: r.id for r in two.routes}
    assert sorted(one.upstreams_by_id) == sorted(two.upstreams_by_id)


def test_unnamed_route_id_is_derived_from_where_it_listens_and_what_it_matches() -> None:
    (a,) = gateway.build(parse_text(routes_text(route(None, "/y"))).config).routes
    (b,) = gateway.build(parse_text(routes_text(route(None, "/y"), port=3001)).config).routes
    (c,) = gateway.build(parse_text(routes_text(route(None, "/other"))).config).routes
    assert a.id.startswith("unnamed-") and len({a.id, b.id, c.id}) == 3
    assert a.name == a.id


def test_duplicate_route_names_are_an_error() -> None:
    text = routes_text(route("chat", "/a"), route("chat", "/b"))
    (err,) = errors_of(text)
    assert err.startswith("gw.yaml:13: binds[0].listeners[0].routes[1].name: route name 'chat' is used twice")


def test_duplicate_route_names_across_binds_are_an_error() -> None:
    text = routes_text(route("chat", "/a")) + routes_text(route("chat", "/b"), port=3001).removeprefix(
        "binds:\n"
    )
    (err,) = errors_of(text)
    assert "binds[1].listeners[0].routes[0].name: route name 'chat' is used twice" in err


def test_unnamed_routes_with_the_same_matches_collide() -> None:
    (err,) = errors_of(routes_text(route(None, "/a"), route(None, "/a")))
    assert "binds[0].listeners[0].routes[1]" in err and "give the routes names" in err, err


@pytest.mark.parametrize("bad", ['"quoted"', "with#hash", "back\\slash", "ü-name", "tab\tname", " padded"])
def test_names_that_cannot_travel_in_envoy_metadata_are_refused(bad: str) -> None:
    quoted = json.dumps(bad)  # a JSON string is a YAML double-quoted scalar
    (err,) = errors_of(routes_text(route(quoted, "/a")))
    assert "routes[0].name" in err, err
    (err,) = errors_of(routes_text(route("ok", "/a", provider=quoted)))
    assert "providers[0].name" in err, err


def test_provider_names_cannot_hold_the_id_separator() -> None:
    (err,) = errors_of(routes_text(route("ok", "/a", provider="a/b")))
    assert "providers[0].name" in err and "/" in err, err


def test_no_route_needs_authz_yet() -> None:
    gw = gateway.build(load(ROOT / "policies" / "gateway.yaml").config)
    assert not any(r.needs_authz for r in gw.routes)


_ONE_ROUTE = (
    "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - ai: {provider: {openAI: {}}}\n"
)


def test_client_limits_have_bounded_defaults() -> None:
    gw = gateway.build(parse_text(_ONE_ROUTE, "gw.yaml").config)
    assert gw.limit_seconds("request_headers_timeout") == 10
    assert gw.limit_seconds("upload_timeout") == 60
    assert gw.limit_seconds("idle_connection_timeout") == 60
    assert gw.limits.max_connections == 10000
    assert gw.config.config.xff_num_trusted_hops == 0


def test_client_limits_are_checked_and_a_misspelt_one_is_an_error() -> None:
    text = "config:\n  xffNumTrustedHops: -1\n  limits:\n    maxConnection: 10\n" + _ONE_ROUTE
    errs = errors_of(text)
    assert any(e.startswith("gw.yaml:2: config.xffNumTrustedHops:") for e in errs), errs
    assert "gw.yaml:4: config.limits.maxConnection: unknown or unsupported field" in errs
    text = "config:\n  limits:\n    requestHeadersTimeout: 5s\n    uploadTimeout: later\n" + _ONE_ROUTE
    (err,) = errors_of(text)
    assert err.startswith("gw.yaml:4: config.limits.uploadTimeout: invalid duration"), err


def test_stream_limits_default_to_generous_bounds_and_a_route_may_set_its_own() -> None:
    gw = gateway.build(parse_text(_ONE_ROUTE, "gw.yaml").config)
    assert gw.routes[0].stream_limits(gw) == (300.0, 3600.0)  # streamIdleTimeout, streamMaxDuration
    text = _ONE_ROUTE + "      policies: {timeout: {streamIdleTimeout: 20s, streamMaxDuration: 10m}}\n"
    gw = gateway.build(parse_text(text, "gw.yaml").config)
    assert gw.routes[0].stream_limits(gw) == (20.0, 600.0)
    text = "config:\n  limits:\n    streamIdleTimeout: 30s\n    streamMaxDuration: 2h\n" + _ONE_ROUTE
    gw = gateway.build(parse_text(text, "gw.yaml").config)
    assert gw.routes[0].stream_limits(gw) == (30.0, 7200.0)


def test_a_bad_stream_limit_is_a_load_error() -> None:
    (err,) = errors_of("config:\n  limits:\n    streamIdleTimeout: soon\n" + _ONE_ROUTE)
    assert err.startswith("gw.yaml:3: config.limits.streamIdleTimeout: invalid duration"), err
    (err,) = errors_of(_ONE_ROUTE + "      policies: {timeout: {streamMaxDuration: forever}}\n")
    assert "policies.timeout" in err and "invalid duration" in err, err


def test_limit_store_and_remote_rate_limit_timeouts_are_checked() -> None:
    from pydantic import ValidationError

    from extproc.config.ratelimit import RedisStore, RemoteRateLimit

    with pytest.raises(ValidationError, match="invalid duration 'soon'"):
        RedisStore.model_validate({"url": "redis://127.0.0.1:6379", "timeout": "soon"})
    with pytest.raises(ValidationError, match="invalid duration 'later'"):
        RemoteRateLimit.model_validate(
            {"domain": "d", "host": "rl:8081", "descriptors": [], "timeout": "later"}
        )
    assert RedisStore.model_validate({"url": "redis://127.0.0.1:6379", "timeout": "50ms"}).timeout == "50ms"
