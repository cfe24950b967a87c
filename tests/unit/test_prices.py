"""The price table: LiteLLM's shape, OTel usage semantics, unpriced models, reload without restart."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from extproc import gateway
from extproc.config.loader import load
from extproc.telemetry.prices import Price, PriceTable, PriceWatcher, cost_usd, parse_table, read_table
from extproc.translate.usage import Usage

ROOT = Path(__file__).resolve().parents[2]
PRICES = ROOT / "policies" / "prices.json"
SEEDS = ROOT.parent / "shared" / "seeds"


def test_litellm_entries_are_read_by_their_field_names() -> None:
    table = parse_table(
        {
            # LiteLLM's own first entry documents the fields with strings: not a price.
            "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": "per token", "mode": "chat"},
            "m": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "cache_read_input_token_cost": 1e-07,
                "cache_creation_input_token_cost": 1.25e-06,
                "litellm_provider": "anthropic",
                "max_input_tokens": 200000,
            },
            "image-model": {"output_cost_per_image": 0.04},
            "not-an-entry": "text",
        }
    )
    assert table == {"m": Price(1e-06, 2e-06, 1e-07, 1.25e-06)}


def test_cost_follows_otel_usage_input_includes_the_cache() -> None:
    price = Price(input=3e-06, output=15e-06, cache_read=0.3e-06, cache_write=3.75e-06)
    # 1000 input tokens of which 600 read from the cache and 100 written to it; 50 output.
    usage = Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=600, cache_write_tokens=100)
    expected = 300 * 3e-06 + 600 * 0.3e-06 + 100 * 3.75e-06 + 50 * 15e-06
    assert cost_usd(usage, price) == pytest.approx(expected, rel=1e-12)
    # Reasoning is part of output: priced as output, not added again.
    with_reasoning = Usage(input_tokens=10, output_tokens=50, reasoning_tokens=40)
    assert cost_usd(with_reasoning, price) == pytest.approx(10 * 3e-06 + 50 * 15e-06)


def test_cache_without_its_own_price_is_charged_as_input() -> None:
    price = Price(input=2e-06, output=8e-06)
    usage = Usage(input_tokens=100, output_tokens=10, cache_read_tokens=40)
    assert cost_usd(usage, price) == pytest.approx(100 * 2e-06 + 10 * 8e-06)


def test_lookup_tries_the_providers_prefix_then_the_model() -> None:
    table = PriceTable({"gemini/gemini-2.5-flash": Price(3e-07, 2.5e-06), "gpt-4o": Price(2.5e-06, 1e-05)})
    assert table.find("gemini-2.5-flash", "gemini") == ("gemini/gemini-2.5-flash", Price(3e-07, 2.5e-06))
    assert table.find("gpt-4o", "azure") == ("gpt-4o", Price(2.5e-06, 1e-05))
    usage = Usage(input_tokens=10, output_tokens=10)
    # The answering model first, then the one asked for.
    cost = table.cost(usage, ["gpt-4o-2024-08-06", "gpt-4o"], "openai")
    assert cost.status == "priced" and cost.model == "gpt-4o"
    assert cost.usd == pytest.approx(10 * 2.5e-06 + 10 * 1e-05)


def test_unpriced_model_is_reported_never_guessed() -> None:
    table = PriceTable({"gpt-4o": Price(2.5e-06, 1e-05)})
    cost = table.cost(Usage(input_tokens=5, output_tokens=5), ["gpt-4o-mini-unknown", None], "openai")
    assert (cost.usd, cost.status) == (None, "unpriced")
    assert table.cost(None, ["gpt-4o"], "openai").status == "no_usage"


def _seed_and_default_models() -> set[tuple[str, str]]:
    """(provider kind, model) for every model a seed or the default config names."""
    models: set[tuple[str, str]] = set()
    for path in [ROOT / "policies" / "gateway.yaml", *sorted((ROOT / "tests" / "configs").glob("*.yaml"))]:
        for up in gateway.build(load(path).config).upstreams_by_id.values():
            if up.model:
                models.add((up.kind, up.model))
    # Models clients send in the seeds' and README's examples.
    text = "".join(p.read_text() for p in sorted(SEEDS.glob("*.md"))) if SEEDS.exists() else ""
    text += (ROOT / "README.md").read_text()
    for m in re.findall(r'"model"\s*:\s*"([^"]+)"', text):
        models.add(("", m))
    return models


# What the examples send that is not a model (routing names, aliases, the mock's test names).
_NOT_MODELS = {"fast", "some-model", "default/weatheragent", "claude", "claude-3-sonnet", "no-such-model"}


def test_price_table_covers_the_seeds_and_the_default_config() -> None:
    table = PriceTable(read_table(PRICES))
    missing = sorted(
        f"{kind or '?'}:{model}"
        for kind, model in _seed_and_default_models()
        if model not in _NOT_MODELS
        # A client's model in an example may be for any provider (claude-sonnet-4@20250514 is Vertex's).
        and all(table.find(model, k) is None for k in ([kind] if kind else ["", "gemini", "vertex", "bedrock"]))
    )
    assert not missing, f"policies/prices.json has no price for {missing}"
    data = json.loads(PRICES.read_text())
    assert all("input_cost_per_token" in e and "output_cost_per_token" in e for e in data.values())


def test_reload_without_restart_keeps_the_last_good_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}))
    table = PriceTable()
    watcher = PriceWatcher(path, table, interval=0.05)
    watcher.load_now()
    assert table.find("m", None) == ("m", Price(1e-06, 2e-06))
    assert watcher.poll() is False  # unchanged
    path.write_text(json.dumps({"m": {"input_cost_per_token": 5e-06, "output_cost_per_token": 6e-06}}))
    os.utime(path, ns=(1, 10**18))  # a new mtime even on a coarse clock
    assert watcher.poll() is True
    assert table.find("m", None) == ("m", Price(5e-06, 6e-06))
    path.write_text("{ half written")
    os.utime(path, ns=(1, 2 * 10**18))
    with caplog.at_level(logging.ERROR, "gateway.prices"):
        assert watcher.poll() is False
    assert "keeping the last one" in caplog.text
    assert table.find("m", None) == ("m", Price(5e-06, 6e-06))


def test_watcher_thread_picks_up_a_change(tmp_path: Path) -> None:
    import time

    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"a": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}))
    table = PriceTable()
    watcher = PriceWatcher(path, table, interval=0.02)
    watcher.load_now()
    watcher.start()
    try:
        path.write_text(json.dumps({"b": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}))
        os.utime(path, ns=(1, 10**18))
        deadline = time.monotonic() + 5
        while table.find("b", None) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert table.find("b", None) is not None and table.find("a", None) is None
    finally:
        watcher.stop()
