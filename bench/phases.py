"""Where the added latency goes, message by message, as Envoy itself measures it.

Envoy's ext_proc filter times every call it makes to the sidecar (its ExtProcLoggingInfo filter
state): from sending a message to taking the answer, per phase. This benchmark puts those times
in a file access log and runs wrk at concurrency 1 on the same paths as bench/run.py (Envoy
alone, the do-nothing Python ext_proc on uvloop, the gateway on an OpenAI and a translated
route), windows alternating, then reports per path the medians of:

- the request as the client saw it (wrk's p50) and as Envoy timed it (first byte in to last out);
- each ext_proc message: request headers, request body, response headers, response body (µs);
- ``rest``: Envoy's time for the request less the upstream's and the ext_proc calls'.

Then one wrk window per path at concurrency 16: CPU per request of each process (Envoy, sidecars).

The gap between the gateway and the bare ext_proc in one column is the gateway's own work in that
message (plus what it makes the event loop wait for); the request-headers column also holds the
cost of opening the gRPC stream, which every request pays.

    .venv/bin/python bench/phases.py --duration 4 --rounds 3
    .venv/bin/python bench/phases.py --limits redis   # and the limit stage's cost, message by message
    .venv/bin/python bench/phases.py --limits redis --budgets   # and the budget stage's, and both
    .venv/bin/python bench/phases.py --limits redis-unix --budgets   # Redis over its Unix socket
    .venv/bin/python bench/phases.py --limits redis --budgets --extproc-cpus auto   # worker pinned

``--budgets`` adds three routes that check bench/budgets.py's API key (every path's requests
carry it): ``keyed`` (the key only), ``budgeted`` (its two budgets) and ``governed`` (the limits
and the budgets on one route); compare them with ``keyed``, as ``limited`` with ``open``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import budgets, envoys, limits, measure  # noqa: E402
from bench.run import _end, wait_ok  # noqa: E402
from extproc import cpu_affinity  # noqa: E402
from extproc.render.filters import EXT_PROC  # noqa: E402
from extproc.supervisor import Stack  # noqa: E402
from tests.redis_server import start_redis  # noqa: E402

PHASES = (
    ("req headers", "request_header_latency_us"),
    ("req body", "request_body_total_latency_us"),
    ("resp headers", "response_header_latency_us"),
    ("resp body", "response_body_total_latency_us"),
)
_TIMES = (
    "%ROUTE_NAME%",
    "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
)
LOG_FORMAT = " ".join([*_TIMES, *(f"%FILTER_STATE({EXT_PROC}:FIELD:{f})%" for _, f in PHASES)]) + "\n"
_HCM = "envoy.filters.network.http_connection_manager"


def add_phase_log(config: dict[str, Any], path: Path) -> None:
    """A file access log of ``LOG_FORMAT`` on every HTTP listener of an Envoy config."""
    entry = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
        },
    }
    for listener in config["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for net in chain["filters"]:
                if net["name"] == _HCM:
                    net["typed_config"].setdefault("access_log", []).append(entry)


class PhaseLoggedStack(Stack):
    """The gateway, its Envoy config rendered as usual plus the phase log (in its workdir)."""

    @property
    def phase_log(self) -> Path:
        return self.workdir / "phases.log"

    def render(self) -> Path:
        path = super().render()
        config = yaml.safe_load(path.read_text())
        add_phase_log(config, self.phase_log)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def _number(text: str) -> float | None:
    return None if text in ("-", "") else float(text)


def read_log(path: Path, path_of: Callable[[str], str]) -> dict[str, list[list[float | None]]]:
    """Each request's times, by the bench path ``path_of`` names from its route."""
    rows: dict[str, list[list[float | None]]] = {}
    for line in path.read_text().splitlines():
        route, *times = line.split(" ")
        rows.setdefault(path_of(route), []).append([_number(t) for t in times])
    return rows


def medians(rows: list[list[float | None]]) -> dict[str, float | None]:
    names = ["envoy_us", "upstream_us", *(name for name, _ in PHASES)]
    out: dict[str, float | None] = {}
    for i, name in enumerate(names):
        values = [r[i] for r in rows if r[i] is not None]
        out[name] = statistics.median(values) if values else None
    calls = sum(v for k, v in out.items() if k not in ("envoy_us", "upstream_us") and v is not None)
    envoy_us, upstream_us = out["envoy_us"], out["upstream_us"]
    out["rest"] = envoy_us - (upstream_us or 0) - calls if envoy_us is not None else None
    return out


def start(
    work: Path,
    stop: list[Callable[[], None]],
    store: str | None = None,
    with_budgets: bool = False,
    extproc_cpus: list[int] | None = None,
) -> tuple[dict[str, tuple[str, dict[str, int]]], Path]:
    """Envoy alone, the bare ext_proc and the gateway; each path's URL and processes (by name),
    and the gateway's phase log.
    ``store`` (``memory``, ``redis`` or ``redis-unix``): the gateway also has bench/limits.py's open
    and limited routes, the limits counted in process, in a real Redis on loopback, or in the same
    Redis over its Unix socket; ``with_budgets``: and the
    keyed, budgeted and governed routes (module docstring), in the same store; ``extproc_cpus``:
    the gateway's extproc worker kept on the first of those CPUs."""
    up_port = envoys.free_port()
    upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
    stop.append(lambda: _end(upstream))
    urls = {}
    port = envoys.free_port()
    alone = envoys.start_envoy(envoys.plain_proxy_config(port, envoys.free_port(), up_port), work, "alone")
    stop.append(lambda: _end(alone))
    urls["envoy"] = (f"http://127.0.0.1:{port}/v1/chat/completions", {"envoy": alone.pid})
    port, ext = envoys.free_port(), envoys.free_port()
    sidecar = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_extproc.py"), str(ext), "--uvloop"]
    )
    stop.append(lambda: _end(sidecar))
    bare_cfg = envoys.bare_extproc_config(port, envoys.free_port(), up_port, ext)
    add_phase_log(bare_cfg, work / "bare.log")
    bare = envoys.start_envoy(bare_cfg, work, "bare")
    stop.append(lambda: _end(bare))
    urls["bare"] = (
        f"http://127.0.0.1:{port}/v1/chat/completions",
        {"envoy": bare.pid, "extproc": sidecar.pid},
    )
    host = f"127.0.0.1:{up_port}"
    routes = [
        envoys.provider_route("openai", {"openAI": {}}, host),
        envoys.provider_route("translated", {"anthropic": {}}, host),
    ]
    names = ["openai", "translated"]
    if store is not None:
        policy = work / "ratelimits.yaml"
        policy.write_text(limits.POLICY)
        routes += limits.routes(host, policy)
        names += ["open", "limited"]
    if with_budgets:
        routes += _budget_routes(host, work)
        names += ["keyed", "budgeted", "governed"]
    port = envoys.free_port()
    config = envoys.gateway_config(port, routes)
    if with_budgets:
        config["config"]["cost"] = {"pricesFile": budgets.PRICES}
    if store in ("redis", "redis-unix"):
        redis = start_redis(work / "redis")
        stop.append(redis.stop)
        url = redis.unix_url if store == "redis-unix" else redis.url
        config["config"]["rateLimitStore"] = {"redis": {"url": url, "keyPrefix": "bench:"}}
    stack = envoys.gateway_stack(config, work, 1, stack_type=PhaseLoggedStack, extproc_cpus=extproc_cpus)
    stop.append(stack.stop)
    stack.start(timeout=30)
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    for name in names:
        urls[name] = (f"http://127.0.0.1:{port}/{name}/v1/chat/completions", pids)
    key = {"authorization": f"Bearer {budgets.KEY}"} if with_budgets else None
    for url, _ in urls.values():
        wait_ok(url, key)
    return urls, stack.phase_log


def _budget_routes(host: str, work: Path) -> list[dict[str, Any]]:
    """bench/budgets.py's keyed and budgeted routes, and the budgeted one with bench/limits.py's
    limits too (its policy file is already written)."""
    file = work / "budgets.yaml"
    file.write_text(budgets.BUDGETS)
    keyed, budgeted = budgets.routes(host, file)
    governed = envoys.provider_route("governed", {"openAI": {}}, host)
    governed["policies"] |= budgeted["policies"] | {
        "localRateLimit": limits.BUCKET,
        "rateLimits": {"file": str(work / "ratelimits.yaml"), "domain": "bench"},
    }
    return [keyed, budgeted, governed]


def cpu_split(url: str, pids: dict[str, int], duration: int, script: Path) -> dict[str, float]:
    """CPU ms per request of each process (descendants included) over a wrk window at concurrency 16."""
    before = {name: measure.cpu_ticks([pid]) for name, pid in pids.items()}
    requests = measure.wrk(url, 16, duration, script)["requests"] or 1
    return {
        name: measure.ticks_to_ms(measure.cpu_ticks([pid]) - before[name]) / requests
        for name, pid in pids.items()
    }


def _route_path(route: str) -> str:
    """The bench path of a gateway route's name ("openai" before "open": it contains it)."""
    names = ("governed", "budgeted", "translated", "limited", "openai", "keyed", "open")
    return next(name for name in names if name in route)


def table(p50: dict[str, float], phases: dict[str, dict[str, float | None]]) -> str:
    head = ["path", "p50 ms", "added ms", "Envoy µs", "upstream µs", *(n for n, _ in PHASES), "rest µs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, ms in p50.items():
        m = phases.get(path, {})
        cells = [path, f"{ms:.2f}", f"{ms - p50['envoy']:+.2f}"]
        for key in ("envoy_us", "upstream_us", *(n for n, _ in PHASES), "rest"):
            v = m.get(key)
            cells.append("-" if v is None else f"{v:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--limits",
        choices=("memory", "redis", "redis-unix"),
        help="add bench/limits.py's open and limited routes, in this store",
    )
    p.add_argument(
        "--budgets", action="store_true", help="add the keyed, budgeted and governed routes (--limits' store)"
    )
    p.add_argument(
        "--extproc-cpus",
        default="off",
        help="the gateway's extproc worker kept on one CPU, as gateway run --extproc-cpus (off, auto, 0)",
    )
    args = p.parse_args()
    if args.budgets and args.limits is None:
        args.limits = "memory"
    measure.ensure_wrk()
    stop: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        work = Path(tmp)
        try:
            cpus = cpu_affinity.parse(args.extproc_cpus)
            urls, gateway_log = start(work, stop, args.limits, args.budgets, cpus)
            # With budgets every path's requests carry the API key (ignored where none is checked).
            script = budgets.wrk_script(work) if args.budgets else measure.wrk_script(envoys.REQUEST, work)
            for url, _ in urls.values():
                measure.wrk(url, 1, 2, script)  # warm-up, not logged below
            for log in (work / "bare.log", gateway_log):
                log.write_text("")
            p50s: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(args.rounds):
                for name, (url, _) in urls.items():
                    p50s[name].append(measure.wrk(url, 1, args.duration, script)["p50_ms"])
            rows = read_log(work / "bare.log", lambda _: "bare") | read_log(gateway_log, _route_path)
            cpu = {name: cpu_split(url, pids, args.duration, script) for name, (url, pids) in urls.items()}
        finally:
            for end in reversed(stop):
                end()
    p50 = {name: statistics.median(v) for name, v in p50s.items()}
    print(table(p50, {path: medians(r) for path, r in rows.items()}))
    print("\nCPU ms per request at concurrency 16, by process:\n")
    for name, split in cpu.items():
        print(f"- {name}: " + ", ".join(f"{proc} {ms:.3f}" for proc, ms in split.items()))


if __name__ == "__main__":
    main()
