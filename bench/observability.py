"""What observability costs: the same gateway and upstream with metrics, logs and traces on
(every request sampled, CEL fields on each) against all of them off, in one run.

Six gateways on one fast upstream (bench/envoys.py), measured in alternating windows (A B C A B
C ...) so a change in the machine's load falls on all of them alike:

- ``off``:     no usage record (no metrics, no log line), no tracing: the extproc sidecar runs
  with the usage-record stage taken out (a benchmark-only wrapper, ``_WITHOUT_USAGE``), so the
  answer is never read (two ext_proc messages fewer per request);
- ``usage``:   the pipeline's usage record (issue 7's "usage on every path": the answer read, the
  tokens and cost worked out, the ledger's row kept) observed nowhere: no metrics, no log line,
  no spans (a benchmark-only wrapper, ``_USAGE_ONLY``). What observability itself costs is
  ``default`` and the rest against this one; against ``off`` it includes reading the answer;
- ``default``: metrics and a JSON log line per request, no fields, every answer through the
  sidecar (``limits.answersFromAccessLog: false``);
- ``logged``:  ``default`` with ``limits.answersFromAccessLog`` (the default): the answer's usage comes by
  Envoy's access log, and the answer never reaches the sidecar (README "Answers from Envoy's
  access log");
- ``traced``:  ``default`` and tracing with ``randomSampling: true`` to a local OTLP sink
  (Envoy's spans and the gateway's);
- ``full``:    ``traced`` with CEL fields on metrics, log lines and spans (the seed's kind).

The OTLP sink (a grpcio TraceService that counts bytes and never decodes) and the upstream are
not counted in CPU; wrk runs at the throughput concurrency.

    .venv/bin/python bench/observability.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402
from extproc.supervisor import Stack  # noqa: E402

PATHS = ("off", "usage", "default", "logged", "traced", "full")
# The usage-record stage out of every route: no metrics, no log line (and so no spans either).
_WITHOUT_USAGE = """
import sys
from extproc import cli
from extproc.pipeline import stages
from extproc.pipeline.stages.usage_record import UsageRecord
_for_route = stages.for_route
stages.for_route = lambda *a, **k: [s for s in _for_route(*a, **k) if not isinstance(s, UsageRecord)]
sys.argv = ["extproc", *sys.argv[1:]]
cli.main()
"""
# The usage record worked out (cost, record) and kept in the ledger (the accounting, issue 10's
# chargeback), but not observed: no metrics, no log line, no spans.
_USAGE_ONLY = """
import sys
from extproc import cli
from extproc.ledger import runtime as ledger
from extproc.pipeline.stages import usage_record
from extproc.telemetry import runtime
async def _record_only(self, ex):
    ledger.submit(usage_record.record_of(ex, runtime.current().cost_of(ex)))
usage_record.UsageRecord.on_complete = _record_only
sys.argv = ["extproc", *sys.argv[1:]]
cli.main()
"""
FIELDS = {
    "user_id": "identity.user_id",
    "model": "llm.requestModel",
    "provider": "llm.provider",
    "tokens": "llm.totalTokens",
}


class WrappedStack(Stack):
    """The gateway with its extproc sidecar started through a benchmark-only wrapper script."""

    wrapper = ""

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        if name.startswith("extproc"):
            argv = [sys.executable, "-c", self.wrapper, *argv[3:]]  # argv[:3]: python -m extproc
        super()._spawn(name, argv, env)


class WithoutUsageStack(WrappedStack):
    wrapper = _WITHOUT_USAGE


class UsageOnlyStack(WrappedStack):
    wrapper = _USAGE_ONLY


class Sink:
    """An OTLP TraceService that takes the bytes and answers at once: collectors are not measured."""

    def __init__(self) -> None:
        self.port = envoys.free_port()
        self.bytes = self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def export(request: bytes, context: Any) -> bytes:
            self.calls += 1
            self.bytes += len(request)
            return b""  # an empty ExportTraceServiceResponse

        handler = grpc.unary_unary_rpc_method_handler(export)
        service = "opentelemetry.proto.collector.trace.v1.TraceService"
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {"Export": handler})])
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()


def gateway(name: str, up: str, sink: Sink, work: Path) -> tuple[Stack, str]:
    route = envoys.provider_route("openai", {"openAI": {}}, up)
    port = envoys.free_port()
    config = envoys.gateway_config(port, [route])
    # Every gateway but ``logged`` reads each answer in the sidecar (its traced ones would anyway).
    config["config"]["limits"] = {"answersFromAccessLog": name == "logged"}
    if name in ("traced", "full"):
        config["config"]["tracing"] = {"otlpEndpoint": f"http://127.0.0.1:{sink.port}", "randomSampling": True}
    if name == "full":
        config["config"]["metrics"] = {"fields": {"add": {"user_id": "identity.user_id"}}}
        config["config"]["logging"] = {"fields": {"add": FIELDS}}
        config["config"]["tracing"]["fields"] = {"add": FIELDS}
    (work / name).mkdir(parents=True)
    path = work / name / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    kind = {"off": WithoutUsageStack, "usage": UsageOnlyStack}.get(name, Stack)
    stack = kind(
        str(path), work / name / "gateway", extproc_port=envoys.free_port(), authz_port=envoys.free_port(),
        mock_port=None, quiet=True, envoy_concurrency=1,
    )  # fmt: skip
    stack.start(timeout=30)
    return stack, f"http://127.0.0.1:{port}/openai/v1/chat/completions"


Factory = Callable[[str, str, "Sink", Path], tuple[Stack, str]]


def measure_all(
    args: argparse.Namespace, work: Path, paths: tuple[str, ...] = PATHS, make: Factory | None = None
) -> dict[str, Any]:
    """Alternating windows on the gateways ``paths`` names, each made by ``make`` (``gateway``)."""
    make = make or gateway
    script = measure.wrk_script(envoys.REQUEST, work)
    up_port = envoys.free_port()
    upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
    sink = Sink()
    stacks: dict[str, tuple[Stack, str]] = {}
    windows: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
    try:
        for name in paths:
            stacks[name] = make(name, f"127.0.0.1:{up_port}", sink, work)
        for _, url in stacks.values():
            measure.wrk(url, 4, 1, script)  # warm connections and caches
        for _ in range(args.rounds):
            for name, (stack, url) in stacks.items():
                procs = {n: [p.pid] for n, p in stack.procs.items()}
                ticks0 = {n: measure.cpu_ticks(pids) for n, pids in procs.items()}
                figures = measure.wrk(url, args.connections, args.duration, script)
                done = max(figures["requests"], 1)
                per = {n: measure.ticks_to_ms(measure.cpu_ticks(p) - ticks0[n]) / done for n, p in procs.items()}
                figures["cpu_ms_per_req"] = sum(per.values())
                figures.update({f"cpu_ms_per_req_{n}": v for n, v in per.items()})
                windows[name].append(figures)
        time.sleep(6)  # the last spans reach the sink (Envoy flushes every 5 s, extproc every 1 s)
    finally:
        for stack, _ in stacks.values():
            stack.stop()
        upstream.terminate()
        upstream.wait(timeout=5)
        sink.server.stop(grace=0)
    summary = {name: _summary(w) for name, w in windows.items()}
    for base_name in ("off", "usage"):
        base = summary[base_name]["rps"]
        for s in summary.values():
            s[f"rps_vs_{base_name}_pct"] = round(100 * (s["rps"] - base) / base, 1)
    return {"summary": summary, "windows": windows, "sink": {"exports": sink.calls, "bytes": sink.bytes}}


def _summary(windows: list[dict[str, float]]) -> dict[str, float]:
    return {
        "rps": round(statistics.median(w["rps"] for w in windows), 1),
        "p50_ms": round(statistics.median(w["p50_ms"] for w in windows), 2),
        "p99_ms": round(statistics.median(w["p99_ms"] for w in windows), 2),
        **{
            k: round(statistics.median(w[k] for w in windows), 3)
            for k in windows[0]
            if k.startswith("cpu_ms_per_req")
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per window")
    p.add_argument("--rounds", type=int, default=3, help="windows per gateway, alternating")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    measure.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-obs-") as tmp:
        results = measure_all(args, Path(tmp))
    results["meta"] = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    print("| gateway | requests/s | vs off | vs usage | p50 ms | p99 ms | CPU ms/request | of which extproc | envoy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in results["summary"].items():
        print(
            f"| {name} | {s['rps']} | {s['rps_vs_off_pct']:+}% | {s['rps_vs_usage_pct']:+}% "
            f"| {s['p50_ms']} | {s['p99_ms']} "
            f"| {s['cpu_ms_per_req']} | {s['cpu_ms_per_req_extproc']} | {s['cpu_ms_per_req_envoy']} |"
        )
    print(f"\nOTLP sink: {results['sink']['exports']} exports, {results['sink']['bytes']} bytes")
    path = args.json or ROOT / "bench" / "results" / f"observability-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
