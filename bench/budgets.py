"""The cost of dollar budgets: the budget stage per request in process, and the gateway with a
budget against the same route without it, with the in-process store and with Redis, in one run.

The budgets (none ever refuses: the benchmark measures checking, not refusing): the caller's API
key's daily budget and its group's monthly one, so each request prices its estimate, reserves in
two counters and settles them with the answer's priced usage. Both routes check the same API key
(the authz sidecar's cost is on both sides), so the difference is the budget stage alone.

1. ``stage``: ``on_request`` and ``decide`` + ``on_complete`` called in process, N times (p50/p99,
   microseconds), with the in-process store and with a real Redis on loopback (Debian's redis-server).
2. ``gateway``: two gateways to the same fast upstream (bench/envoys.py), one per store, each with
   a keyed route and a keyed route with budgets; wrk at concurrency 1 and 16 on each; the added p50.

    .venv/bin/python bench/budgets.py --requests 5000 --duration 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402
from bench.limits import _percentiles  # noqa: E402
from extproc import grpc_serve  # noqa: E402
from tests.redis_server import start_redis  # noqa: E402

KEY = "sk-bench-budget-key-0001"
BUDGETS = """\
budgets:
  - {api_key_id: "*", period: day, usd: 1000000000}
  - {group_id: bench, period: month, usd: 1000000000}
"""
PRICES = str(ROOT / "policies" / "prices.json")


def routes(host: str, budgets: Path) -> list[dict[str, Any]]:
    keys = {"keys": [{"key": KEY, "metadata": {"id": "k-bench", "user": "bench", "team": "bench"}}]}
    keyed = envoys.provider_route("keyed", {"openAI": {}}, host)
    keyed["policies"]["apiKey"] = keys
    budgeted = envoys.provider_route("budgeted", {"openAI": {}}, host)
    budgeted["policies"] |= {"apiKey": keys, "budgets": {"file": str(budgets)}}
    return [keyed, budgeted]


async def _stage(config_path: Path, requests: int) -> dict[str, Any]:
    """on_request (the pricing and the reservation), on_complete (the settlement, which a
    networked store sends in the background), and the wall time per request of the whole loop
    with the background settlements drained."""
    from extproc import gateway
    from extproc.config.loader import load
    from extproc.limits.context import LimitsContext
    from extproc.pipeline.exchange import Exchange
    from extproc.pipeline.llm_request import LLMRequest
    from extproc.pipeline.stage import request_side
    from extproc.telemetry import runtime
    from extproc.translate.usage import Usage

    gw = gateway.build(load(config_path).config)
    runtime.start(gw, config_path.parent)  # the price table, as the sidecar loads it
    ctx = LimitsContext(gw, config_path.parent)
    route = gw.routes_by_id["budgeted"]
    stage = ctx.budget_stage_for(route)
    assert stage is not None
    body = json.loads(envoys.REQUEST)
    identity = {"api_key_id": "k-bench", "user_id": "bench", "group_id": "bench"}
    reserve, settle = [], []
    try:
        for n in range(requests + 200):
            ex = Exchange(str(n), route, "completions", "POST", "/budgeted/v1/chat/completions")
            ex.llm = LLMRequest("completions", dict(body))
            ex.identity = identity
            ex.upstream = route.direct_upstream
            ex.estimated_tokens()  # the pipeline's estimate, paid with or without budgets
            t0 = time.perf_counter_ns()
            await request_side(stage, ex)
            t1 = time.perf_counter_ns()
            ex.usage, ex.outcome, ex.response_model = Usage(input_tokens=12, output_tokens=7), "ok", "gpt-4o"
            await stage.on_complete(ex)
            t2 = time.perf_counter_ns()
            await stage.drain()  # one request at a time: its settlement lands before the next
            if n == 199:  # the first ones warm connections and caches
                started = time.perf_counter_ns()
            if n >= 200:
                reserve.append(t1 - t0)
                settle.append(t2 - t1)
        wall_us = (time.perf_counter_ns() - started) / requests / 1000
    finally:
        await ctx.close()
    return {
        "on_request": _percentiles(reserve),
        "on_complete": _percentiles(settle),
        "per_request_us_incl_background": round(wall_us, 1),
    }


def wrk_script(workdir: Path) -> Path:
    script = workdir / "post-keyed.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
        f'wrk.headers["authorization"] = "Bearer {KEY}"\nwrk.body = {json.dumps(envoys.REQUEST)}\n'
    )
    return script


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--skip-gateway", action="store_true")
    args = p.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-budgets-") as tmp:
        work = Path(tmp)
        budgets = work / "budgets.yaml"
        budgets.write_text(BUDGETS)
        redis = start_redis(work / "redis")
        upstream = None
        try:
            up_port = envoys.free_port()
            upstream = envoys.start_envoy(
                envoys.upstream_config(up_port, envoys.free_port()), work, "upstream"
            )
            host = f"127.0.0.1:{up_port}"
            stores = {"memory": None, "redis": {"redis": {"url": redis.url, "keyPrefix": "bench:"}}}
            configs = {}
            for name, store in stores.items():
                config = envoys.gateway_config(envoys.free_port(), routes(host, budgets))
                config["config"]["cost"] = {"pricesFile": PRICES}
                if store is not None:
                    config["config"]["rateLimitStore"] = store
                configs[name] = config
                path = work / f"{name}.yaml"
                path.write_text(yaml.safe_dump(config))
                results.setdefault("stage", {})[name] = grpc_serve.run(
                    _stage(path, args.requests)
                )  # the sidecars' loop
            if not args.skip_gateway:
                measure.ensure_wrk()
                for name, config in configs.items():
                    gw_work = work / f"gw-{name}"
                    gw_work.mkdir(parents=True, exist_ok=True)
                    script = wrk_script(gw_work)
                    results.setdefault("gateway", {})[name] = envoys.added_p50(
                        config, gw_work, args.duration, "keyed", "budgeted", script
                    )
        finally:
            if upstream is not None:
                upstream.terminate()
                upstream.wait(timeout=5)
            redis.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
