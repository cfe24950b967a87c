"""Where observability's CPU goes, per request, in one process and without Envoy or gRPC sockets.

The extproc router phase is driven message by message as Envoy drives it (protobuf bytes in,
protobuf bytes out, so parsing and serialising count) on the bench's route (OpenAI to OpenAI, the
bench upstream's answer), and the usage record's parts are timed one by one:

- ``messages_off``: request headers and body only (what ``off`` in bench/observability.py costs);
- ``messages_on``: the four messages of an observed request, the usage record stage taken out;
- the record's parts: ``cost``, ``cel_context``, ``record``, ``ledger_submit``, ``log_line``,
  ``metrics``, ``trace``;
- ``threads``: what the writer threads (usage log, ledger, span export) spent, per request.

CPU is thread CPU time (``time.thread_time_ns``), which another process's load does not inflate
the way wall time is; run it a few times and read the medians.

    .venv/bin/python bench/obs_profile.py --requests 3000 --mode traced
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb  # noqa: E402

from bench import envoys  # noqa: E402
from bench.extproc_messages import body_message, headers_message  # noqa: E402
from extproc import gateway, usage_log  # noqa: E402
from extproc.config.loader import parse_text  # noqa: E402
from extproc.ledger import runtime as ledger  # noqa: E402
from extproc.pipeline.stages import usage_record  # noqa: E402
from extproc.telemetry import runtime  # noqa: E402

PARTS = ("cost", "cel_context", "record", "ledger_submit", "log_line", "metrics", "trace")


TICKS = os.sysconf("SC_CLK_TCK")


def thread_ticks() -> dict[str, int]:
    """CPU ticks (user + system) by thread name ("main" for this one), from /proc."""
    out: dict[str, int] = {}
    me = str(os.getpid())
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = "main" if task.name == me else names.get(task.name, "other (grpc, sink)")
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def config(mode: str, sink_endpoint: str) -> dict[str, Any]:
    route = envoys.provider_route("openai", {"openAI": {}}, "127.0.0.1:9")
    cfg: dict[str, Any] = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}], "config": {}}
    if mode in ("traced", "full"):
        cfg["config"]["tracing"] = {"otlpEndpoint": sink_endpoint, "randomSampling": True}
    if mode == "full":
        fields = {
            "user_id": "identity.user_id",
            "model": "llm.requestModel",
            "provider": "llm.provider",
            "tokens": "llm.totalTokens",
        }
        cfg["config"]["metrics"] = {"fields": {"add": {"user_id": "identity.user_id"}}}
        cfg["config"]["logging"] = {"fields": {"add": fields}}
        cfg["config"]["tracing"]["fields"] = {"add": fields}
    return cfg


def messages(route_id: str) -> list[bytes]:
    """What Envoy sends on one router-phase stream of the bench's request, serialised."""


    req = {":method": "POST", ":path": "/openai/v1/chat/completions", ":authority": "127.0.0.1",
           "content-type": "application/json", "user-agent": "wrk", "x-request-id": "r-1"}  # fmt: skip
    resp = {":status": "200", "content-type": "application/json", "content-length": "300"}
    meta = 'filter_metadata { key: "gateway" value { fields { key: "upstream" value { string_value: "%s" } } } }'
    return [
        headers_message("request_headers", req, {"xds.route_name": route_id}).SerializeToString(),
        body_message("request_body", envoys.REQUEST.encode()).SerializeToString(),
        headers_message("response_headers", resp, {"response.code_details": "via_upstream",
                "upstream.request_attempt_count": 1, "xds.upstream_host_metadata": meta}).SerializeToString(),
        body_message("response_body", envoys.OPENAI_BODY.encode()).SerializeToString(),
    ]  # fmt: skip


class Timed(usage_record.UsageRecord):
    """The usage record's on_complete, each part timed (the same calls in the same order)."""

    totals: dict[str, int] = dict.fromkeys(PARTS, 0)

    async def on_complete(self, ex: Any) -> None:
        clock, tot = time.thread_time_ns, self.totals
        t = runtime.current()
        a = clock()
        cost = t.cost_of(ex)
        b = clock()
        ctx = t.context_of(ex, cost)
        c = clock()
        record = usage_record.record_of(ex, cost)
        d = clock()
        ledger.submit(record)
        e = clock()
        usage_log.write(t.log_line(record, ctx))
        f = clock()
        t.metrics.observe(ex, cost, t.label_values(ctx))
        g = clock()
        t.trace(ex, cost, ctx)
        h = clock()
        for name, (x, y) in zip(PARTS, ((a, b), (b, c), (c, d), (d, e), (e, f), (f, g), (g, h)), strict=True):
            tot[name] += y - x


async def drive(proc: Any, msgs: list[bytes], n: int) -> int:
    """n router-phase streams of ``msgs``; the main thread's CPU in ns."""

    async def inbox() -> Any:
        for raw in msgs:
            yield pb.ProcessingRequest.FromString(raw)

    start = time.thread_time_ns()
    for _ in range(n):
        async for resp in proc._router(inbox()):
            resp.SerializeToString()
    return time.thread_time_ns() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--mode", choices=("default", "traced", "full"), default="traced")
    args = p.parse_args()
    from bench.observability import Sink

    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="obs-profile-") as tmp:
        cfg = parse_text(yaml.safe_dump(config(args.mode, f"http://127.0.0.1:{sink.port}"))).config
        gw = gateway.build(cfg)
        tel = runtime.start(gw, Path(tmp))
        if tel.tracer is not None:  # export at once: the exporter's CPU falls in this run
            tel.tracer.processor._batch_processor._schedule_delay = 0.05  # type: ignore[attr-defined]
        with open(os.devnull, "wb") as null:
            usage_log.start(null)
            ledger.start(f"sqlite:///{tmp}/ledger.db", cfg.config.ledger, tel.metrics.registry, "agentgateway")
            result = asyncio.run(run(gw, args.requests))
            time.sleep(2)  # the writer threads catch up (the ledger lingers 1 s, spans go every 0.05 s)
            after = thread_ticks()
            ledger.stop()
            usage_log.stop()
            if tel.tracer is not None:
                tel.tracer.shutdown()
        result.pop("_process_start"), result.pop("_main")
        before = result.pop("_threads")
        for name in sorted(set(after) | set(before)):
            used = after.get(name, 0) - before.get(name, 0)
            if used and name != "main":
                result[f"thread {name}"] = round(used * 1e6 / TICKS / args.requests, 1)
    sink.server.stop(grace=0)
    print(json.dumps({"mode": args.mode, "us_per_request": result}, indent=2))
    return 0


async def run(gw: Any, n: int) -> dict[str, Any]:
    from extproc.limits.context import LimitsContext
    from extproc.pipeline import stages
    from extproc.server import ExternalProcessor

    route = gw.routes[0]
    msgs = messages(route.id)
    limits = LimitsContext(gw, Path.cwd())
    base = [s for s in stages.for_route(route, limits) if not isinstance(s, usage_record.UsageRecord)]
    off = ExternalProcessor(gw, {route.id: base}, limits)
    bare = ExternalProcessor(gw, {route.id: [*base, _NoRecord()]}, limits)
    timed = ExternalProcessor(gw, {route.id: [*base, Timed()]}, limits)
    warm = max(200, n // 10)
    for proc, m in ((off, msgs[:2]), (bare, msgs), (timed, msgs)):
        await drive(proc, m, warm)
    Timed.totals = dict.fromkeys(PARTS, 0)
    process_start = time.process_time_ns()
    before_threads = thread_ticks()
    main_ns = 0
    out: dict[str, Any] = {}
    out_off = await drive(off, msgs[:2], n)
    out_bare = await drive(bare, msgs, n)
    out_timed = await drive(timed, msgs, n)
    main_ns = out_off + out_bare + out_timed
    out["messages_off"] = round(out_off / n / 1000, 1)
    out["messages_on"] = round(out_bare / n / 1000, 1)
    out["with_record"] = round(out_timed / n / 1000, 1)
    out.update({k: round(v / n / 1000, 1) for k, v in Timed.totals.items()})
    out["_threads"] = before_threads
    out["_process_start"] = process_start
    out["_main"] = main_ns
    return out


class _NoRecord(usage_record.UsageRecord):
    """Asks for the response like the usage record, records nothing."""

    async def on_complete(self, ex: Any) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
