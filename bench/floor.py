"""What one ext_proc message costs, and what makes it cheaper: variants of the bare ext_proc side by side.

Every variant is its own Envoy (concurrency 1) and its own do-nothing Python ext_proc
(bench/bare_extproc.py), all in front of the same fast upstream Envoy, all started at once.
Windows alternate: each round measures every variant once at concurrency 1 and once at 16,
so the machine's drift (it is shared) falls on all of them alike. Per variant: requests/s,
p50, CPU per request (that variant's Envoy and sidecar, from /proc) and ext_proc messages per
request (Envoy's counters). Added p50 is against Envoy alone in the same round.

    .venv/bin/python bench/floor.py --duration 5 --rounds 2
    .venv/bin/python bench/floor.py --variants envoy,gen,rw --rounds 3
    .venv/bin/python bench/floor.py --probe      # which message carries which attributes
    .venv/bin/python bench/floor.py --gateway    # the gateway's sidecars on asyncio's loop and on uvloop
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402
from bench.run import Endpoint, _end, wait_ok, window  # noqa: E402

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Processing modes by the messages they cost per request (request headers, request body,
# response headers, response body).
MODES: dict[int, tuple[str, str, str, str]] = {
    4: ("SEND", "BUFFERED", "SEND", "BUFFERED"),
    3: ("SEND", "BUFFERED", "SKIP", "BUFFERED"),
    2: ("SEND", "BUFFERED", "SKIP", "NONE"),
    1: ("SKIP", "BUFFERED", "SKIP", "NONE"),
}


@dataclass(frozen=True)
class Variant:
    name: str
    server: tuple[str, ...] = ()  # bare_extproc.py flags
    messages: int = 4
    modes: tuple[str, str, str, str] | None = None  # instead of MODES[messages]
    client: str = "envoy"  # envoy_grpc or google_grpc
    uds: bool = False
    h2: dict[str, int] = field(default_factory=dict)  # the ext_proc cluster's http2_protocol_options
    observability: bool = False
    envoy_only: bool = False


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("envoy", envoy_only=True),
        Variant("gen"),  # today's servicer: the reference
        Variant("gen_b"),  # the same again: how far two identical variants drift apart (noise)
        Variant("rw", ("--serve", "rw")),
        Variant("uvloop", ("--uvloop",)),
        Variant("rw_uvloop", ("--serve", "rw", "--uvloop")),
        Variant("sync", ("--serve", "sync")),
        Variant("opts", ("--options", "latency")),
        Variant("uds", uds=True),
        Variant("google", client="google"),
        Variant(
            "h2win",
            h2={"initial_stream_window_size": 1048576, "initial_connection_window_size": 4194304},
        ),
        # Envoy sends no body in observability mode unless the body mode is STREAMED; and as the
        # silent sidecar never ends its streams, under load they pile up to the cluster's circuit
        # breaker and requests fail (see the errors in the results): a figure for Envoy's side only.
        Variant("observe", ("--silent",), modes=("SEND", "STREAMED", "SEND", "STREAMED"), observability=True),
        Variant("streamed", modes=("SEND", "STREAMED", "SEND", "STREAMED")),
        Variant("swi", ("--switch-interval", "0.0005")),
        Variant("m3", messages=3),
        Variant("m2", messages=2),
        Variant("m1", messages=1),
        Variant("m2_bodies", modes=("SKIP", "BUFFERED", "SKIP", "BUFFERED")),
        Variant("best", ("--serve", "rw", "--uvloop"), uds=True),
        Variant("best_m2", ("--serve", "rw", "--uvloop"), uds=True, messages=2),
    )
}
DEFAULT = (
    "envoy",
    "gen",
    "gen_b",
    "rw",
    "uvloop",
    "rw_uvloop",
    "sync",
    "uds",
    "google",
    "h2win",
    "m1",
    "m2",
    "m3",
)


def envoy_config(v: Variant, port: int, admin: int, upstream: int, ext: int | str) -> dict:
    """bench/envoys.py's bare ext_proc config, changed as the variant says."""
    if v.envoy_only:
        return envoys.plain_proxy_config(port, admin, upstream)
    cfg = envoys.bare_extproc_config(port, admin, upstream, ext if isinstance(ext, int) else 0)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    proc = hcm["http_filters"][0]["typed_config"]
    keys = ("request_header_mode", "request_body_mode", "response_header_mode", "response_body_mode")
    proc["processing_mode"] = dict(zip(keys, v.modes or MODES[v.messages], strict=True))
    if v.observability:
        proc["observability_mode"] = True
    cluster = cfg["static_resources"]["clusters"][-1]
    if v.client == "google":
        target = f"127.0.0.1:{ext}" if isinstance(ext, int) else ext
        proc["grpc_service"] = {"google_grpc": {"target_uri": target, "stat_prefix": "bare"}, "timeout": "2s"}
        cfg["static_resources"]["clusters"].remove(cluster)
        return cfg
    if isinstance(ext, str):  # unix:PATH
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"] = {"pipe": {"path": ext.removeprefix("unix:")}}
    if v.h2:
        opts = cluster["typed_extension_protocol_options"][_HTTP_OPTIONS]
        opts["explicit_http_config"]["http2_protocol_options"] = dict(v.h2)
    return cfg


def _upstream(work: Path, stop: list[Callable[[], None]]) -> int:
    up_port = envoys.free_port()
    upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
    stop.append(lambda: _end(upstream))
    return up_port


# The gateway itself, on each event loop the sidecars can run on (extproc/grpc_serve.py).
GATEWAY_LOOPS = ("asyncio", "uvloop")


def start_gateways(work: Path, stop: list[Callable[[], None]]) -> dict[str, Endpoint]:
    """Envoy alone, then one gateway per event loop, each with an OpenAI and a translated route."""
    from extproc.grpc_serve import EVENT_LOOP_ENV

    up_port = _upstream(work, stop)
    port, admin = envoys.free_port(), envoys.free_port()
    alone = envoys.start_envoy(envoys.plain_proxy_config(port, admin, up_port), work, "envoy")
    stop.append(lambda: _end(alone))
    out = {"envoy": Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", admin, lambda: [alone.pid])}
    host = f"127.0.0.1:{up_port}"
    for loop in GATEWAY_LOOPS:
        routes = [
            envoys.provider_route("openai", {"openAI": {}}, host),
            envoys.provider_route("translated", {"anthropic": {}}, host),
        ]
        port = envoys.free_port()
        config = envoys.gateway_config(port, routes)
        stack = envoys.gateway_stack(config, work / loop, 1)
        stop.append(stack.stop)
        os.environ[EVENT_LOOP_ENV] = loop  # the sidecars inherit it (restarts too: the supervisor keeps it)
        try:
            stack.start(timeout=30)
        finally:
            os.environ.pop(EVENT_LOOP_ENV, None)
        for path in ("openai", "translated"):
            out[f"{loop}/{path}"] = Endpoint(
                f"http://127.0.0.1:{port}/{path}/v1/chat/completions",
                config["config"]["adminPort"],
                lambda s=stack: [p.pid for p in s.procs.values()],
            )
    return out


def start(variants: list[Variant], work: Path, stop: list[Callable[[], None]]) -> dict[str, Endpoint]:
    up_port = _upstream(work, stop)
    out: dict[str, Endpoint] = {}
    for v in variants:
        port, admin = envoys.free_port(), envoys.free_port()
        pids: list[int] = []
        ext: int | str = 0
        if not v.envoy_only:
            ext = f"unix:{work / (v.name + '.sock')}" if v.uds else envoys.free_port()
            argv = [sys.executable, str(ROOT / "bench" / "bare_extproc.py"), str(ext), *v.server]
            sidecar = subprocess.Popen(argv)
            stop.append(lambda s=sidecar: _end(s))
            pids.append(sidecar.pid)
        proc = envoys.start_envoy(envoy_config(v, port, admin, up_port, ext), work, v.name)
        stop.append(lambda p=proc: _end(p))
        pids.append(proc.pid)
        out[v.name] = Endpoint(
            f"http://127.0.0.1:{port}/v1/chat/completions", admin, lambda p=tuple(pids): list(p)
        )
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    stop: list[Callable[[], None]] = []
    script = measure.wrk_script(envoys.REQUEST, work)
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        if args.gateway:
            (work / "asyncio").mkdir()
            (work / "uvloop").mkdir()
            targets = start_gateways(work, stop)
        else:
            targets = start([VARIANTS[n] for n in args.variants], work, stop)
        for target in targets.values():
            wait_ok(target.url)
            measure.wrk(target.url, 4, 1, script)
        for r in range(args.rounds):
            # Each round starts one variant later, so none is always measured right after another.
            names = list(targets)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                target = targets[name]
                figures = {"c1": window(target, 1, args.duration, script)}
                figures["c16"] = window(target, 16, args.duration, script)
                rounds.setdefault(name, []).append(figures)
                print(f"round {r + 1}: {name} {_line(figures)}", file=sys.stderr, flush=True)
    finally:
        for end in reversed(stop):
            end()
    return rounds


def _line(f: dict[str, Any]) -> str:
    return (
        f"c1 p50 {f['c1']['p50_ms']:.3f} ms, c16 {f['c16']['rps']:.0f} rq/s "
        f"{f['c16']['cpu_ms_per_req']:.3f} ms CPU/rq"
    )


def summary(rounds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Medians over rounds; added p50 is against Envoy alone in the same round."""
    base = rounds.get("envoy")
    rows = []
    for name, figs in rounds.items():
        added = [f["c1"]["p50_ms"] - b["c1"]["p50_ms"] for f, b in zip(figs, base or figs, strict=True)]
        sent = [f["c16"]["messages_per_request"]["sent"] for f in figs]
        rows.append(
            {
                "variant": name,
                "cpu_ms_per_req_c16": statistics.median(f["c16"]["cpu_ms_per_req"] for f in figs),
                "rps_c16": statistics.median(f["c16"]["rps"] for f in figs),
                "p50_ms_c1": statistics.median(f["c1"]["p50_ms"] for f in figs),
                "added_p50_ms_c1": statistics.median(added) if base else None,
                "rps_c1": statistics.median(f["c1"]["rps"] for f in figs),
                "messages": statistics.median(sent),
                "cpu_by_round": [round(f["c16"]["cpu_ms_per_req"], 3) for f in figs],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    ref = next((r for r in rows if r["variant"] in ("gen", "asyncio/openai")), None)
    out = [
        "| variant | msgs/rq | CPU ms/rq c16 | vs ref | rq/s c16 | p50 c1 ms | added p50 c1 | CPU by round |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rel = f"{(r['cpu_ms_per_req_c16'] / ref['cpu_ms_per_req_c16'] - 1) * 100:+.0f}%" if ref else ""
        added = "" if r["added_p50_ms_c1"] is None else f"{r['added_p50_ms_c1']:.3f}"
        out.append(
            f"| {r['variant']} | {r['messages']:.2f} | {r['cpu_ms_per_req_c16']:.3f} | {rel} | "
            f"{r['rps_c16']:.0f} | {r['p50_ms_c1']:.3f} | {added} | {r['cpu_by_round']} |"
        )
    return "\n".join(out)


def probe(work: Path) -> str:
    """Which message carries the request and response attributes when headers messages are skipped,
    and whether a request body answer's header mutation (:path) applies when Envoy skipped the
    request headers message (which provider body comes back: chat completion or Messages)."""
    import httpx

    stop: list[Callable[[], None]] = []
    lines = []
    try:
        up_port = envoys.free_port()
        upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
        stop.append(lambda: _end(upstream))
        for modes in (
            ("SEND", "BUFFERED", "SKIP", "BUFFERED"),
            ("SKIP", "BUFFERED", "SKIP", "BUFFERED"),
            ("SEND", "BUFFERED", "SEND", "BUFFERED"),
        ):
            ext, port, admin = envoys.free_port(), envoys.free_port(), envoys.free_port()
            err_path = work / f"probe-{'-'.join(modes)}.err"
            err = open(err_path, "w")  # noqa: SIM115 - the child writes it
            script = str(ROOT / "bench" / "bare_extproc.py")
            sidecar = subprocess.Popen([sys.executable, script, str(ext), "--show-attributes"], stderr=err)
            cfg = envoys.bare_extproc_config(port, admin, up_port, ext)
            hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            proc = hcm["http_filters"][0]["typed_config"]
            keys = ("request_header_mode", "request_body_mode", "response_header_mode", "response_body_mode")
            proc["processing_mode"] = dict(zip(keys, modes, strict=True))
            proc["request_attributes"] = ["request.path", "xds.route_name"]
            proc["response_attributes"] = ["response.code", "response.code_details"]
            envoy = envoys.start_envoy(cfg, work, "probe")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            wait_ok(url)
            time.sleep(0.3)
            seen = len(err_path.read_text().splitlines())  # wait_ok's requests
            httpx.post(url, content=envoys.REQUEST, headers={"content-type": "application/json"}, timeout=5)
            time.sleep(0.3)
            _end(envoy)
            _end(sidecar)
            err.close()
            text = err_path.read_text().splitlines()[seen:]
            lines.append(f"modes {modes}:\n" + "".join(f"    {ln}\n" for ln in text))
        for modes in (("SKIP", "BUFFERED", "SKIP", "NONE"), ("SEND", "BUFFERED", "SKIP", "NONE")):
            lines.append(
                f"modes {modes}, body answer sets :path /v1/messages: {_path_probe(work, up_port, modes)}"
            )
    finally:
        for end in reversed(stop):
            end()
    return "\n".join(lines)


def _path_probe(work: Path, up_port: int, modes: tuple[str, ...]) -> str:
    import httpx

    ext, port, admin = envoys.free_port(), envoys.free_port(), envoys.free_port()
    script = str(ROOT / "bench" / "bare_extproc.py")
    sidecar = subprocess.Popen([sys.executable, script, str(ext), "--set-path", "/v1/messages"])
    cfg = envoys.bare_extproc_config(port, admin, up_port, ext)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    proc = hcm["http_filters"][0]["typed_config"]
    keys = ("request_header_mode", "request_body_mode", "response_header_mode", "response_body_mode")
    proc["processing_mode"] = dict(zip(keys, modes, strict=True))
    proc["mutation_rules"] = {"allow_all_routing": True}
    envoy = envoys.start_envoy(cfg, work, "probe-path")
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ok(url)
        body = httpx.post(url, content=envoys.REQUEST, headers={"content-type": "application/json"}).json()
        return "applied (Messages answer)" if body.get("type") == "message" else "not applied (chat answer)"
    finally:
        _end(envoy)
        _end(sidecar)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=DEFAULT)
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--gateway", action="store_true", help="the gateway on each event loop instead")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gw-floor-"))
    if args.probe:
        print(probe(work))
        return
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})")
    measure.ensure_wrk()
    load = os.getloadavg()
    rounds = run(args, work)
    rows = summary(rounds)
    print(
        f"## ext_proc floor ({args.duration} s windows, {args.rounds} rounds alternating, "
        f"load {load[0]:.2f} -> {os.getloadavg()[0]:.2f})\n"
    )
    print(table(rows))
    when = datetime.now(UTC).isoformat(timespec="seconds").replace(":", "")
    path = args.json or ROOT / "bench" / "results" / f"floor-{when}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"load": load, "rows": rows, "rounds": rounds}, indent=2))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
