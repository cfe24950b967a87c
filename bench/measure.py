"""What one benchmark window measures: wrk's figures, CPU from /proc, messages from Envoy's stats.

The parsers are plain functions of text so the unit tests can feed them samples
(tests/unit/test_bench_parse.py); only ``wrk``, ``cpu_ticks`` and ``envoy_stats``
touch the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
# Side listeners of the gateway's Envoy and the admin interface: not client requests.
SIDE_LISTENERS = frozenset({"admin", "readiness", "metrics"})

_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_STAT = re.compile(r"^([\w.:\-/]+): (\d+)$", re.M)
_EXT_PROC = re.compile(
    r"^(http|cluster)\.(.+)\.ext_proc\.(streams_started|stream_msgs_sent|stream_msgs_received)$"
)
_DOWNSTREAM = re.compile(r"^http\.(.+)\.downstream_rq_total$")


# --- wrk -----------------------------------------------------------------


def parse_wrk(out: str) -> dict[str, float]:
    """requests/s, p50/p99 in ms and the failures from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    lat = {p: float(v) * _UNIT_MS[u] for p, v, u in _LAT.findall(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in ", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "requests": float(total.group(1)) if total else 0.0,
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": float(sum(int(n) for n in sock.groups())) if sock else 0.0,
    }


def wrk_script(body: str, workdir: Path) -> Path:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    return script


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    argv = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def ensure_wrk() -> None:
    """wrk comes from Debian; install it once when it is missing."""
    if shutil.which("wrk"):
        return
    print("installing wrk (Debian package)...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)


# --- CPU -----------------------------------------------------------------


def parse_proc_stat(line: str) -> tuple[int, int]:
    """(ppid, CPU ticks) from one /proc/<pid>/stat line.

    The ticks are utime + stime (all threads) + cutime + cstime (children it has
    reaped, so work done in a short-lived child is not lost). The command name may
    hold spaces and parentheses, so fields are counted from the last ``)``.
    """
    fields = line[line.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5) (state): ppid is field 4, utime..cstime are 14..17.
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def _all_stats(proc: Path) -> dict[int, tuple[int, int]]:
    stats: dict[int, tuple[int, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_proc_stat((entry / "stat").read_text())
        except (OSError, ValueError):  # gone between listing and reading
            continue
    return stats


def cpu_ticks(roots: Iterable[int], proc: Path = PROC) -> int:
    """CPU ticks of the processes ``roots`` and all their live descendants."""
    stats = _all_stats(proc)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()))
    return sum(stats[pid][1] for pid in seen)


def ticks_to_ms(ticks: int) -> float:
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


# --- Envoy stats -----------------------------------------------------------


def parse_stats(text: str) -> dict[str, int]:
    """Counters and gauges from Envoy's text ``/stats``; histograms (not integers) are skipped."""
    return {name: int(value) for name, value in _STAT.findall(text)}


def envoy_stats(admin_port: int) -> dict[str, int]:
    wanted = urllib.parse.quote("ext_proc|ext_authz|upstream_rq_total|downstream_rq_total")
    url = f"http://127.0.0.1:{admin_port}/stats?filter={wanted}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return parse_stats(resp.read().decode())


@dataclass
class Messages:
    """What one window cost in gRPC to the sidecars, from Envoy's counters (deltas)."""

    requests: int = 0  # client requests on the measured listeners
    streams: int = 0  # ext_proc streams (one per request and ext_proc filter that ran)
    router_sent: int = 0  # ext_proc messages to the sidecar from listener filters (http.*)
    upstream_sent: int = 0  # ... from upstream filters on clusters (cluster.*), per attempt
    received: int = 0  # ext_proc answers back
    authz: int = 0  # ext_authz Check calls (one request and one answer each)

    @property
    def sent(self) -> int:
        return self.router_sent + self.upstream_sent

    @property
    def round_trips(self) -> int:
        """Messages a sidecar must handle and answer: the cost the issue counts."""
        return self.sent + self.authz

    def per_request(self) -> dict[str, float]:
        n = self.requests or 1
        figures = {**asdict(self), "sent": self.sent, "round_trips": self.round_trips}
        return {k: v / n for k, v in figures.items() if k != "requests"}


def messages(before: Mapping[str, int], after: Mapping[str, int], authz_cluster: str) -> Messages:
    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    out = Messages(authz=delta(f"cluster.{authz_cluster}.upstream_rq_total"))
    for name in after:
        if (m := _DOWNSTREAM.match(name)) and m.group(1) not in SIDE_LISTENERS:
            out.requests += delta(name)
        elif m := _EXT_PROC.match(name):
            level, counter = m.group(1), m.group(3)
            if counter == "streams_started":
                out.streams += delta(name)
            elif counter == "stream_msgs_received":
                out.received += delta(name)
            elif level == "http":
                out.router_sent += delta(name)
            else:
                out.upstream_sent += delta(name)
    return out


def median_window(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The window with the median requests/s, whole (its p50, p99 and CPU belong together),
    with every window's requests/s kept beside it to show the spread."""
    if not runs:
        raise ValueError("no windows to choose from")
    ranked = sorted(runs, key=lambda r: r["rps"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["rps_windows"] = [r["rps"] for r in runs]
    return chosen
