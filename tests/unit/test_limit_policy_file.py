"""rateLimits policy files: envoyproxy/ratelimit's format, its matching rules, errors, hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from extproc.config.loader import ConfigError
from extproc.limits.policy_file import parse_policy
from extproc.limits.policy_watch import WatchedPolicy

ROOT = Path(__file__).resolve().parents[2]

FILE = """\
domain: llm_gateway
descriptors:
  - key: api_key_id
    rate_limit: {unit: minute, requests_per_unit: 60}
  - key: api_key_id
    value: internal-bot
    rate_limit: {unlimited: true}
  - key: user_id
    metadata: {type: tokens}
    rate_limit: {unit: hour, requests_per_unit: 10000, name: per_user}
    descriptors:
      - key: model
        value: "gpt-4o*"
        rate_limit:
          unit: hour
          requests_per_unit: 500
          replaces: [{name: per_user}]
      - key: model
        value: "claude-*"
        share_threshold: true
        rate_limit: {unit: day, requests_per_unit: 2000}
  - key: group_id
    value: marketing
    shadow_mode: true
    rate_limit: {unit: month, requests_per_unit: 5}
"""


def paths(values: dict[str, str]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [(m.limit.path, m.entries) for m in parse_policy(FILE, "rl.yaml").match(values)]


def test_a_key_without_value_counts_each_value_apart() -> None:
    assert paths({"api_key_id": "k1", "route": "r"}) == [("api_key_id", (("api_key_id", "k1"),))]


def test_key_and_value_is_preferred_over_the_key_alone() -> None:
    (m,) = parse_policy(FILE, "rl.yaml").match({"api_key_id": "internal-bot"})
    assert m.limit.unlimited and m.limit.path == "api_key_id=internal-bot"


def test_nested_descriptors_wildcards_and_replaces() -> None:
    # gpt-4o-mini matches "gpt-4o*"; that limit replaces per_user, so only it applies.
    got = paths({"user_id": "alice", "model": "gpt-4o-mini"})
    assert got == [("user_id > model=gpt-4o*", (("user_id", "alice"), ("model", "gpt-4o-mini")))]
    # another model: the per-user limit alone (no nested match), and it counts tokens
    policy = parse_policy(FILE, "rl.yaml")
    (m,) = policy.match({"user_id": "alice", "model": "o3"})
    assert m.limit.name == "per_user" and m.limit.tokens and m.limit.unit == "hour"


def test_share_threshold_shares_one_counter_for_every_matching_value() -> None:
    a = paths({"user_id": "alice", "model": "claude-haiku"})
    b = paths({"user_id": "alice", "model": "claude-opus"})
    assert a[1][1] == b[1][1] == (("user_id", "alice"), ("model", "claude-*"))


def test_shadow_mode_and_units() -> None:
    (m,) = parse_policy(FILE, "rl.yaml").match({"group_id": "marketing"})
    assert m.limit.shadow and m.limit.window == 2592000  # envoyproxy's 30-day month
    assert parse_policy(FILE, "rl.yaml").match({"group_id": "sales"}) == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("domain: d\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
         4, "invalid rate limit unit 'fortnight'"),
        ("domain: d\ndescriptors:\n  - key: user_id\n    rate_limit: {unlimited: true, unit: hour}\n",
         4, "should not specify rate limit unit when unlimited"),
        ("domain: d\ndescriptors:\n  - key: user_id\n    limit: {unit: hour}\n", 4, "unknown key 'limit'"),
        ("domain: d\ndescriptors:\n  - key: tenant\n", 3, "unknown key 'tenant'"),
        ("descriptors: []\n", 1, "needs a domain"),
        ("domain: d\ndescriptors:\n  - key: user_id\n  - key: user_id\n", 4, "duplicate descriptor 'user_id'"),
        ("domain: d\ndescriptors:\n  - key: model\n    value: gpt\n    share_threshold: true\n", 5,
         "share_threshold needs a wildcard"),
        ("domain: d\ndescriptors:\n  - key: user_id\n    metadata: {type: dollars}\n", 4, "type is requests or tokens"),
        ("domain: d\ndescriptors:\n  - key: user_id\n    quota_mode: true\n", 4, "quota_mode is not supported"),
        ("domain: d\ndescriptors: [\n", 3, "invalid YAML"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_field(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(text, "rl.yaml")
    issue = err.value.issues[0]
    assert issue.file == "rl.yaml" and issue.line == line, str(issue)
    assert message in issue.message, str(issue)


def test_the_shipped_policy_file_loads() -> None:
    policy = parse_policy((ROOT / "policies" / "ratelimits.yaml").read_text(), "ratelimits.yaml")
    assert policy.domain == "llm_gateway"


def test_hot_reload_keeps_the_last_good_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text(
        "domain: d\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"
    )
    watched = WatchedPolicy(path, domain="d")

    def limit_of(w: WatchedPolicy) -> int:
        return w.current.match({"user_id": "u"})[0].limit.requests_per_unit

    async def main() -> None:
        assert limit_of(watched) == 5
        path.write_text(
            "domain: d\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: minute, requests_per_unit: 7}\n"
        )
        os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
        assert await watched.refresh()
        assert limit_of(watched) == 7
        path.write_text("domain: d\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: minute\n")
        with caplog.at_level(logging.ERROR, logger="gateway.limits"):
            assert not await watched.refresh()
        assert limit_of(watched) == 7
        assert f"{path}:5" in caplog.text or f"{path}:4" in caplog.text
        path.unlink()
        assert not await watched.refresh()
        assert limit_of(watched) == 7

    asyncio.run(main())


def test_the_route_names_the_domain(tmp_path: Path) -> None:
    path = tmp_path / "rl.yaml"
    path.write_text("domain: other\ndescriptors: []\n")
    with pytest.raises(ConfigError, match="the route names 'llm'"):
        WatchedPolicy(path, domain="llm")
