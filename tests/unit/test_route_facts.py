"""A route's facts are worked out once per route object; a reloaded route gets its own."""

from __future__ import annotations

import yaml

from extproc import gateway
from extproc.config.loader import parse_text
from extproc.pipeline import outbound, route_facts


def build(provider: dict, ai: dict | None = None) -> gateway.Gateway:
    policies: dict = {"backendAuth": {"key": "k"}}
    if ai is not None:
        policies["ai"] = ai
    route = {
        "name": "r",
        "matches": [{"path": {"pathPrefix": "/r"}}],
        "backends": [{"ai": {"name": "p", "provider": provider, "hostOverride": "127.0.0.1:9"}}],
        "policies": policies,
    }
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    return gateway.build(parse_text(yaml.safe_dump(config)).config)


def test_facts_match_the_route() -> None:
    r = build(
        {"anthropic": {}}, ai={"forwardHeaders": ["x-team"], "routes": {"/v1/messages": "messages"}}
    ).routes[0]
    facts = route_facts.of(r)
    assert facts.direct is r.direct_upstream is not None
    assert facts.needs_authz is r.needs_authz is False
    assert facts.forward == ("x-team",)
    assert facts.tables == ({"/v1/messages": "messages"},)
    assert facts.model_from_config is False
    assert facts.translates("completions") and not facts.translates("messages")
    assert route_facts.of(r) is facts  # kept


def test_a_reloaded_route_with_the_same_id_gets_its_own_facts() -> None:
    first = build({"openAI": {}}).routes[0]
    assert not route_facts.of(first).translates("completions")
    second = build({"anthropic": {"model": "claude-x"}}).routes[0]
    assert second.id == first.id
    facts = route_facts.of(second)
    assert facts.translates("completions")
    assert facts.model_from_config is True
    assert facts.direct is second.direct_upstream


def test_allowed_header_answers_are_remembered_as_computed() -> None:
    names = ["content-type", "authorization", "x-team-a", "anthropic-beta", ":path", "accept-encoding"]
    for kind in ("openai", "anthropic"):
        for reads in (True, False):
            for extra in ((), ("x-team-*",)):
                for name in names:
                    want = outbound.allowed_header(name, kind, reads, extra)
                    assert outbound._allowed_cached(name, kind, reads, extra) is want
                    assert outbound._allowed_cached(name, kind, reads, extra) is want
