"""Config loading: the seeds' shape loads; every error names file, line and field."""

from __future__ import annotations

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
    assert names == ["openai", "anthropic", "gemini", "bedrock", "azure", "vertex", "failover", "default"]
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
        "      policies:\n        localRateLimit: []\n"
    )
    (err,) = errors_of(text)
    assert err.startswith("gw.yaml:9: binds[0].listeners[0].routes[0].policies.localRateLimit:")


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


def test_envoy_import_package_is_not_our_envoy_dir() -> None:
    import envoy

    assert "site-packages" in str(envoy.__file__)
