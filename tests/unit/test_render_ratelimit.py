"""Envoy's local_ratelimit, rendered only for routes whose one limit is a request bucket."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from extproc import gateway
from extproc.config.loader import load, parse_text
from extproc.render import render
from extproc.render.ratelimit import LOCAL_RATELIMIT
from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "configs"


def hcm(rendered: dict) -> dict:
    listener = rendered["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_the_blog_config_is_enforced_by_envoy_after_authz_before_the_sidecar(tmp_path: Path) -> None:
    rendered = render(gateway.build(load(CONFIGS / "blog-rate-limit.yaml").config))
    names = [f["name"] for f in hcm(rendered)["http_filters"]]
    assert names.index(LOCAL_RATELIMIT) == names.index("envoy.filters.http.ext_authz") + 1
    # then the sidecar (after json_to_metadata, which reads the stream flag for it)
    assert names[names.index(LOCAL_RATELIMIT) + 1 :][:2] == ["envoy.filters.http.json_to_metadata", "envoy.filters.http.ext_proc"]
    routes = hcm(rendered)["route_config"]["virtual_hosts"][0]["routes"]
    twin, route = routes  # the stream relay's twin first (render/routes.py): the same per-route config
    assert twin["typed_per_filter_config"] == route["typed_per_filter_config"]
    limit = route["typed_per_filter_config"][LOCAL_RATELIMIT]
    assert limit["token_bucket"] == {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "60.000s"}
    assert limit["local_rate_limit_per_downstream_connection"] is False  # one bucket per process
    assert limit["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    assert limit["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "6"}
    mappers = hcm(rendered)["local_reply_config"]["mappers"]
    assert "local_rate_limited" in yaml.safe_dump(mappers[0]["filter"])
    out = tmp_path / "envoy.yaml"
    out.write_text(yaml.safe_dump(rendered))
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "policies",
    [
        {"localRateLimit": [{"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "100s", "type": "tokens"}]},
        {
            "localRateLimit": [
                {"maxTokens": 10, "fillInterval": "1s"},
                {"maxTokens": 100, "fillInterval": "1m"},
            ]
        },
        {"rateLimits": {"file": "ratelimits.yaml"}},
    ],
    ids=["tokens", "two-buckets", "policy-file"],
)
def test_other_limits_are_the_stages_and_envoy_gets_no_filter(policies: dict) -> None:
    route = {"backends": [{"ai": {"provider": {"openAI": {}}}}], "policies": policies}
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    rendered = render(gateway.build(parse_text(yaml.safe_dump(config)).config))
    assert LOCAL_RATELIMIT not in yaml.safe_dump(rendered)


def test_a_route_with_two_matches_is_the_stages() -> None:
    route = {
        "matches": [{"path": {"pathPrefix": "/a"}}, {"path": {"pathPrefix": "/b"}}],
        "backends": [{"ai": {"provider": {"openAI": {}}}}],
        "policies": {"localRateLimit": [{"maxTokens": 10, "tokensPerFill": 10, "fillInterval": "60s"}]},
    }
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    rendered = render(gateway.build(parse_text(yaml.safe_dump(config)).config))
    assert LOCAL_RATELIMIT not in yaml.safe_dump(rendered)  # each Envoy route would have its own bucket
