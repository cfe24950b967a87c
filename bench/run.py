"""Gateway overhead against Envoy alone, on the same machine and upstream, in one run.

Paths to the same fast upstream (a second Envoy answering with fixed provider
bodies, so the upstream is never the bottleneck):

- ``envoy``:      Envoy alone, a plain route (the baseline);
- ``bare``:       Envoy plus a do-nothing Python ext_proc seeing all four phases, on uvloop as the
  gateway's sidecars are (the floor any Python sidecar pays: four gRPC round trips on one stream);
- ``openai``:     the gateway on an OpenAI route (OpenAI client, OpenAI provider);
- ``translated``: the gateway translating an OpenAI client to Anthropic Messages;
- ``failover``:   (opt-in, ``--paths``) Anthropic then OpenAI: two ext_proc levels.

Each path is measured with wrk at concurrency 1 (added latency) and 16 (throughput):
requests/s, p50/p99, CPU per request (utime+stime from /proc of the path's Envoy
and sidecars over the window, descendants included; the upstream and wrk are not
counted) and gRPC messages per request (deltas of the Envoy's own ext_proc and
ext_authz counters). Then the streaming benchmark (bench/stream.py) runs. One
markdown report on stdout, all figures in bench/results/*.json.

    make bench                               # or: .venv/bin/python bench/run.py --duration 8 --rounds 3
    .venv/bin/python bench/run.py --quick    # a smoke run of everything, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure, report, stream  # noqa: E402
from extproc.supervisor import envoy_binary  # noqa: E402

ALL_PATHS = ("envoy", "bare", "openai", "translated", "failover")
DEFAULT_PATHS = ("envoy", "bare", "openai", "translated")


@dataclass
class Endpoint:
    url: str
    admin_port: int
    pids: Callable[[], list[int]]  # the processes whose CPU this path costs


def wait_ok(url: str, extra: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            headers = {"content-type": "application/json", **(extra or {})}
            if httpx.post(url, content=envoys.REQUEST, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def window(target: Endpoint, connections: int, duration: int, script: Path) -> dict[str, Any]:
    """One wrk run with the CPU and the Envoy counters it cost."""
    stats0, ticks0 = measure.envoy_stats(target.admin_port), measure.cpu_ticks(target.pids())
    figures: dict[str, Any] = measure.wrk(target.url, connections, duration, script)
    ticks1, stats1 = measure.cpu_ticks(target.pids()), measure.envoy_stats(target.admin_port)
    msgs = measure.messages(stats0, stats1, envoys.AUTHZ_CLUSTER)
    requests = msgs.requests or int(figures["requests"]) or 1
    cpu_ms = measure.ticks_to_ms(ticks1 - ticks0)
    figures.update(
        cpu_ms=cpu_ms,
        cpu_ms_per_req=cpu_ms / requests,
        messages=asdict(msgs),
        messages_per_request=msgs.per_request(),
    )
    return figures


def count_messages(target: Endpoint, n: int) -> measure.Messages:
    """The messages of ``n`` sequential requests, each complete: exact counts per request.

    A wrk window's counters are close but not exact: wrk stops with requests in flight.
    """
    before = measure.envoy_stats(target.admin_port)
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            resp = client.post(
                target.url, content=envoys.REQUEST, headers={"content-type": "application/json"}
            )
            resp.raise_for_status()
    return measure.messages(before, measure.envoy_stats(target.admin_port), envoys.AUTHZ_CLUSTER)


def start_paths(
    paths: tuple[str, ...], args: argparse.Namespace, work: Path, stop: list[Callable[[], None]]
) -> dict[str, Endpoint]:
    """Start what ``paths`` need; ``stop`` collects how to stop each, in start order."""
    up_port = envoys.free_port()
    upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
    stop.append(lambda: _end(upstream))
    out: dict[str, Endpoint] = {}
    conc = args.envoy_concurrency
    if "envoy" in paths:
        port, admin = envoys.free_port(), envoys.free_port()
        proc = envoys.start_envoy(envoys.plain_proxy_config(port, admin, up_port), work, "envoy-alone", conc)
        stop.append(lambda: _end(proc))
        out["envoy"] = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", admin, lambda: [proc.pid])
    if "bare" in paths:
        port, admin, ext = envoys.free_port(), envoys.free_port(), envoys.free_port()
        # On uvloop, as the gateway's sidecars are (extproc/grpc_serve.py): the same loop on both sides.
        bare_argv = [sys.executable, str(ROOT / "bench" / "bare_extproc.py"), str(ext), "--uvloop"]
        sidecar = subprocess.Popen(bare_argv)
        bare = envoys.start_envoy(envoys.bare_extproc_config(port, admin, up_port, ext), work, "bare", conc)
        stop.extend([lambda: _end(bare), lambda: _end(sidecar)])
        out["bare"] = Endpoint(
            f"http://127.0.0.1:{port}/v1/chat/completions", admin, lambda: [bare.pid, sidecar.pid]
        )
    gateway_paths = [p for p in paths if p in ("openai", "translated", "failover")]
    if gateway_paths:
        host = f"127.0.0.1:{up_port}"
        routes = {
            "openai": envoys.provider_route("openai", {"openAI": {}}, host),
            "translated": envoys.provider_route("translated", {"anthropic": {}}, host),
            "failover": envoys.failover_route("failover", host),
        }
        port = envoys.free_port()
        config = envoys.gateway_config(port, [routes[p] for p in gateway_paths])
        stack = envoys.gateway_stack(config, work, conc, args.workers)
        stop.append(stack.stop)
        stack.start(timeout=30)
        admin = config["config"]["adminPort"]
        for p in gateway_paths:
            out[p] = Endpoint(
                f"http://127.0.0.1:{port}/{p}/v1/chat/completions",
                admin,
                lambda: [proc.pid for proc in stack.procs.values()],
            )
    return {p: out[p] for p in paths}


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_requests(
    args: argparse.Namespace, work: Path
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, measure.Messages]]:
    """Figures per path and level, and the exact messages per path.

    Every path is warmed before any is measured (a path measured while the others' processes
    were still starting came out several times slower), then the windows alternate between the
    paths over ``--rounds`` rounds and each path's median window is reported, so a change in the
    machine's load falls on every path alike.
    """
    stop: list[Callable[[], None]] = []
    script = measure.wrk_script(envoys.REQUEST, work)
    levels = {"c1": 1, f"c{args.connections}": args.connections}
    try:
        targets = start_paths(args.paths, args, work, stop)
        for target in targets.values():
            wait_ok(target.url)
        for target in targets.values():
            measure.wrk(target.url, 4, args.warmup, script)  # warm connections and caches
        windows: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {level: [] for level in levels} for name in targets
        }
        for round_no in range(args.rounds):
            for name, target in targets.items():
                for level, connections in levels.items():
                    windows[name][level].append(window(target, connections, args.duration, script))
            print(f"round {round_no + 1}/{args.rounds} measured", file=sys.stderr)
        results = {
            name: {level: measure.median_window(runs) for level, runs in by_level.items()}
            for name, by_level in windows.items()
        }
        counted = {name: count_messages(target, args.count) for name, target in targets.items()}
        return results, counted
    finally:
        for end in reversed(stop):
            end()


def meta(args: argparse.Namespace) -> dict[str, Any]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
        except OSError:
            return ""

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": out(["git", "rev-parse", "HEAD"]),
        "dirty": bool(out(["git", "status", "--porcelain", "--untracked-files=no"])),
        "envoy": out([envoy_binary(), "--version"]).split("version: ")[-1],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per measured window")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk per path before any window")
    parser.add_argument(
        "--rounds", type=int, default=3, help="windows per path and level, alternating; the median is reported"
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrency of the throughput window")
    parser.add_argument("--workers", type=int, default=1, help="extproc worker processes")
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=1,
        help="worker threads of every Envoy (the same for all paths)",
    )
    parser.add_argument(
        "--paths",
        type=lambda s: tuple(p for p in s.split(",") if p),
        default=DEFAULT_PATHS,
        help=f"comma-separated, from {','.join(ALL_PATHS)} (envoy is always measured)",
    )
    parser.add_argument("--count", type=int, default=20, help="requests that count a path's messages")
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming benchmark")
    parser.add_argument("--events", type=int, default=400, help="stream: delta events per stream")
    parser.add_argument("--runs", type=int, default=15, help="stream: sequential streams per measurement")
    parser.add_argument("--stream-concurrency", type=int, default=8, help="stream: parallel streams")
    parser.add_argument("--json", type=Path, help="where the results go (default bench/results/<time>.json)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s windows, short streams")
    args = parser.parse_args(argv)
    unknown = set(args.paths) - set(ALL_PATHS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    # Every comparison is against Envoy alone, so it is always measured, and first.
    args.paths = ("envoy", *[p for p in ALL_PATHS if p in args.paths and p != "envoy"])
    if args.quick:
        args.duration, args.warmup, args.rounds = 1, 1, 1  # wrk takes whole seconds
        args.events, args.runs, args.stream_concurrency = min(args.events, 100), min(args.runs, 3), 2
    return args


def main() -> None:
    args = parse_args()
    measure.ensure_wrk()
    info = meta(args)
    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    hi = f"c{args.connections}"
    results, counted = run_requests(args, work)
    streams = None
    if not args.no_stream:
        streams = stream.measure(
            args.events,
            args.runs,
            args.stream_concurrency,
            args.envoy_concurrency,
            work / "stream",
            args.quick,
        )
    info["loadavg_after"] = os.getloadavg()

    print(
        f"## Requests ({args.duration:g} s per window, Envoy concurrency {args.envoy_concurrency}, "
        f"{args.workers} extproc worker(s), {info['cpus']} CPUs, load {info['loadavg'][0]:.2f})\n"
    )
    print(report.table(results, counted, hi))
    print(f"\n## gRPC messages per request ({args.count} sequential requests per path)\n")
    print(report.messages_table(counted))
    print("\n## Targets (issue 7)\n")
    print(report.targets(results, hi))
    if streams is not None:
        print(
            f"\n## Streaming ({args.events} delta events per stream; aggregate over {args.stream_concurrency} streams)\n"
        )
        print(stream.table(streams))

    path = args.json or ROOT / "bench" / "results" / f"bench-{info['when'].replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": info,
        "requests": results,
        "messages": {p: {"total": asdict(m), "per_request": m.per_request()} for p, m in counted.items()},
        "targets": report.target_verdicts(results, hi),
        "stream": streams,
    }
    path.write_text(json.dumps(document, indent=2))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
