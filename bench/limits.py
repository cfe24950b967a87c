"""The cost of rate limits: the limit stage per request in process, and the gateway with limits
against the same route without them, with the in-process store and with Redis, in one run.

The limits (none ever refuses: the benchmark measures checking, not refusing): a token bucket
(``localRateLimit``, type tokens) and a policy file with a per-route request limit and a
per-model token limit, so each request reserves and settles three counters.

1. ``stage``: ``on_request`` and ``decide`` + ``on_complete`` called in process, N times (p50/p99,
   microseconds), with the in-process store and with a real Redis on loopback (Debian's redis-server).
2. ``gateway``: two gateways to the same fast upstream (bench/envoys.py), one per store, each
   with an open route and a limited one; wrk at concurrency 1 and 16 on each; the added p50.

    .venv/bin/python bench/limits.py --requests 5000 --duration 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402
from extproc import grpc_serve  # noqa: E402
from tests.redis_server import start_redis  # noqa: E402

POLICY = """\
domain: bench
descriptors:
  - key: route
    rate_limit: {unit: minute, requests_per_unit: 100000000}
    descriptors:
      - key: model
        metadata: {type: tokens}
        rate_limit: {unit: hour, requests_per_unit: 1000000000}
"""
BUCKET = [
    {"maxTokens": 1_000_000_000, "tokensPerFill": 1_000_000_000, "fillInterval": "1s", "type": "tokens"}
]


def routes(host: str, policy: Path) -> list[dict[str, Any]]:
    open_route = envoys.provider_route("open", {"openAI": {}}, host)
    limited = envoys.provider_route("limited", {"openAI": {}}, host)
    limited["policies"]["localRateLimit"] = BUCKET
    limited["policies"]["rateLimits"] = {"file": str(policy), "domain": "bench"}
    return [open_route, limited]


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns)
    return {
        "p50_us": round(samples[len(samples) // 2] / 1000, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] / 1000, 1),
        "mean_us": round(statistics.fmean(samples) / 1000, 1),
    }


async def _stage(config_path: Path, requests: int) -> dict[str, Any]:
    """on_request (on the request's path: the reservation), on_complete (on the answer's path:
    the settlement, which a networked store sends in the background), and the wall time per
    request of the whole loop with the background settlements drained (the CPU it all takes)."""
    from extproc import gateway
    from extproc.config.loader import load
    from extproc.limits.context import LimitsContext
    from extproc.pipeline.exchange import Exchange
    from extproc.pipeline.llm_request import LLMRequest
    from extproc.pipeline.stage import request_side
    from extproc.translate.usage import Usage

    gw = gateway.build(load(config_path).config)
    ctx = LimitsContext(gw, config_path.parent)
    route = gw.routes_by_id["limited"]
    stage = ctx.stage_for(route)
    assert stage is not None
    body = json.loads(envoys.REQUEST)
    reserve, settle = [], []
    try:
        for n in range(requests + 200):
            ex = Exchange(str(n), route, "completions", "POST", "/limited/v1/chat/completions")
            ex.llm = LLMRequest("completions", dict(body))
            ex.estimated_tokens()  # the exchange's estimate is the pipeline's, paid with or without limits
            t0 = time.perf_counter_ns()
            await request_side(stage, ex)
            t1 = time.perf_counter_ns()
            ex.usage, ex.outcome = Usage(input_tokens=12, output_tokens=9), "ok"
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--skip-gateway", action="store_true")
    args = p.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp:
        work = Path(tmp)
        policy = work / "ratelimits.yaml"
        policy.write_text(POLICY)
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
                config = envoys.gateway_config(envoys.free_port(), routes(host, policy))
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
                    script = measure.wrk_script(envoys.REQUEST, gw_work)
                    results.setdefault("gateway", {})[name] = envoys.added_p50(
                        config, gw_work, args.duration, "open", "limited", script
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
