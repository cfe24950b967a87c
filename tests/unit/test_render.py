"""The rendered Envoy config is accepted by the real Envoy and has the failover shape."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from extproc import envoy_config, gateway
from extproc.config.loader import load
from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "policies" / "gateway.yaml", ROOT / "tests" / "configs" / "seed-model-failover.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_real_envoy_validates_rendered_config(path: Path, tmp_path: Path) -> None:
    rendered = envoy_config.render(gateway.build(load(path).config))
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(rendered))
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_groups_become_priority_levels() -> None:
    gw = gateway.build(load(CONFIGS[0]).config)
    rendered = envoy_config.render(gw)
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
    rendered = envoy_config.render(gw)
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
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]


def test_no_secret_in_rendered_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-appear")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-appear")
    text = yaml.safe_dump(envoy_config.render(gateway.build(load(CONFIGS[1]).config)))
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
    rendered = envoy_config.render(gw)
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
    rendered = envoy_config.render(gateway.build(load(CONFIGS[0]).config))
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    mapper = next(
        m
        for m in hcm["local_reply_config"]["mappers"]
        if m["body_format_override"]["json_format"].get("type")
    )
    text = yaml.safe_dump(mapper["filter"])
    assert "metadata_filter" in text and "io.llm_gateway" in text
