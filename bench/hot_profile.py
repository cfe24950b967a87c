"""Where the gateway's own Python work goes per request, in one process and without Envoy or gRPC sockets.

The router phase is driven message by message as Envoy drives it on the bench's routes (protobuf
bytes in, parsed, handled, the replies serialised), with the sidecar's writer threads running as
``extproc`` starts them (the usage log to /dev/null, the ledger to a SQLite file), for:

- ``openai``: OpenAI client, OpenAI provider (bench/run.py's ``openai`` path);
- ``translated``: OpenAI client, Anthropic provider (the ``translated`` path);
- ``limited``: the ``openai`` route with bench/limits.py's rate limits, in-process store.

Printed per route: the event loop's CPU per request (thread CPU time, which other processes'
load does not inflate the way wall time is) and the whole process's (writer threads included).
``--profile`` adds cProfile's top functions by own time and by cumulative time, in microseconds
per request (cProfile roughly doubles what it measures; read the ranking, not the sums).

    .venv/bin/python bench/hot_profile.py --requests 3000
    .venv/bin/python bench/hot_profile.py --requests 2000 --profile --route translated
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb  # noqa: E402

from bench import envoys, limits  # noqa: E402
from bench.extproc_messages import body_message, headers_message  # noqa: E402
from extproc import gateway, schema, tokens, usage_log  # noqa: E402
from extproc.config.loader import parse_text  # noqa: E402
from extproc.ledger import runtime as ledger  # noqa: E402
from extproc.telemetry import runtime  # noqa: E402

ROUTES = {
    "openai": ({"openAI": {}}, envoys.OPENAI_BODY),
    "translated": ({"anthropic": {}}, envoys.ANTHROPIC_BODY),
    "limited": ({"openAI": {}}, envoys.OPENAI_BODY),  # the openai route with bench/limits.py's limits
}


def config(policy: Path) -> dict[str, Any]:
    """The routes; ``policy``: where the limited route's policy file is written."""
    host = "127.0.0.1:9"
    policy.write_text(limits.POLICY)
    routes = [
        envoys.provider_route(n, provider, host) for n, (provider, _) in ROUTES.items() if n != "limited"
    ]
    routes.append(limits.routes(host, policy)[1])  # the openai route plus bench/limits.py's limits
    return {"binds": [{"port": 3000, "listeners": [{"routes": routes}]}], "config": {}}


def messages(gw: gateway.Gateway, name: str) -> list[bytes]:
    """What Envoy sends on one router-phase stream of the bench's request on route ``name``."""
    route = next(r for r in gw.routes if r.name == name)
    up = route.direct_upstream
    assert up is not None

    req = {
        ":authority": "127.0.0.1:3000", ":path": f"/{name}/v1/chat/completions", ":method": "POST",
        ":scheme": "http", "content-type": "application/json", "content-length": str(len(envoys.REQUEST)),
        "x-forwarded-proto": "http", "x-request-id": "2f0c7a52-8d5e-4a5e-9a57-3d5b8c1e2f00",
    }  # fmt: skip
    answer = ROUTES[name][1]
    resp = {":status": "200", "content-type": "application/json", "content-length": str(len(answer)),
            "date": "Tue, 01 Dec 2026 18:00:00 GMT", "server": "envoy", "x-envoy-upstream-service-time": "0"}  # fmt: skip
    meta = (
        'filter_metadata {\n  key: "gateway"\n  value {\n    fields {\n      key: "upstream"\n'
        f'      value {{\n        string_value: "{up.id}"\n      }}\n    }}\n  }}\n}}\n'
    )
    resp_attrs = {"response.code_details": "via_upstream", "xds.upstream_host_metadata": meta,
                  "upstream.request_attempt_count": 1}  # fmt: skip
    return [
        headers_message("request_headers", req, {"xds.route_name": route.id}).SerializeToString(),
        body_message("request_body", envoys.REQUEST.encode()).SerializeToString(),
        headers_message("response_headers", resp, resp_attrs).SerializeToString(),
        body_message("response_body", answer.encode()).SerializeToString(),
    ]


async def drive(proc: Any, msgs: list[bytes], n: int) -> None:
    async def inbox() -> Any:
        for raw in msgs:
            yield pb.ProcessingRequest.FromString(raw)

    for _ in range(n):
        async for resp in proc._router(inbox()):
            resp.SerializeToString()


def table(prof: cProfile.Profile, n: int, key: str, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt if key == "tottime" else ct, nc, f"{Path(file).name}:{line}({fn})"))
    rows.sort(reverse=True)
    lines = [f"  {'us/req':>8} {'calls/req':>9}  function ({key})"]
    for t, nc, name in rows[:top]:
        lines.append(f"  {t / n * 1e6:8.1f} {nc / n:9.2f}  {name}")
    return "\n".join(lines)


async def run(gw: gateway.Gateway, args: argparse.Namespace) -> dict[str, Any]:
    from extproc.server import ExternalProcessor

    proc = ExternalProcessor(gw)
    out: dict[str, Any] = {}
    for name in args.route or list(ROUTES):
        msgs = messages(gw, name)
        await drive(proc, msgs, max(300, args.requests // 5))  # warm caches, tokenizer, validators
        # Thread CPU time, not wall time: a GIL release (os.urandom, a queue put) would otherwise be
        # charged with whatever the writer threads did meanwhile.
        prof = cProfile.Profile(time.thread_time) if args.profile else None
        loop, process = [], []
        for _ in range(args.repeat):
            t0, p0 = time.thread_time_ns(), time.process_time_ns()
            if prof is not None:
                prof.enable()
            await drive(proc, msgs, args.requests)
            if prof is not None:
                prof.disable()
            await asyncio.sleep(1.2)  # the writer threads catch up (the ledger flushes every second)
            t1, p1 = time.thread_time_ns(), time.process_time_ns()
            loop.append((t1 - t0) / args.requests / 1000)
            process.append((p1 - p0) / args.requests / 1000)
        # The least of the repeats: other processes' load only ever adds to CPU time (caches, SMT).
        out[name] = {
            "loop_us_per_request": round(min(loop), 1),
            "process_us_per_request": round(min(process), 1),
        }
        if prof is not None:
            n = args.requests * args.repeat
            print(f"== {name}: by own time\n{table(prof, n, 'tottime', args.top)}")
            print(f"== {name}: by cumulative time\n{table(prof, n, 'cumtime', args.top)}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="requests per measured run")
    p.add_argument("--repeat", type=int, default=5, help="measured runs per route (the least is shown)")
    p.add_argument("--route", action="append", choices=list(ROUTES), help="default: every route")
    p.add_argument("--profile", action="store_true", help="cProfile the event loop's work")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--no-ledger", action="store_true", help="as with config.ledger.enabled: false")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hot-profile-") as tmp, open(os.devnull, "wb") as null:
        cfg = parse_text(yaml.safe_dump(config(Path(tmp) / "ratelimits.yaml"))).config
        gw = gateway.build(cfg)
        tokens.warm_up()
        schema.warm_up()
        tel = runtime.start(gw, Path(tmp))
        usage_log.start(null)
        if not args.no_ledger:
            ledger.start(
                f"sqlite:///{tmp}/ledger.db", cfg.config.ledger, tel.metrics.registry, "agentgateway"
            )
        try:
            result = asyncio.run(run(gw, args))
        finally:
            ledger.stop()
            usage_log.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
