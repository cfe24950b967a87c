"""The request benchmark's markdown: one table of every path and level, the messages, the targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.measure import Messages

LABELS = {
    "envoy": "Envoy alone",
    "bare": "bare Python ext_proc",
    "openai": "gateway, OpenAI route",
    "translated": "gateway, OpenAI -> Anthropic",
    "failover": "gateway, failover route",
}

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]  # path -> level ("c1", "c16") -> figures


@dataclass(frozen=True)
class Target:
    """A figure the issue sets a ceiling on (issue 7, "Speed")."""

    path: str
    level: str  # "c1", or "hi" for the throughput level
    figure: str  # "added_p50_ms" or "cpu_ms_per_req"
    limit: float
    what: str

    def value(self, results: Results, hi: str) -> float | None:
        runs = results.get(self.path)
        level = hi if self.level == "hi" else self.level
        if not runs or level not in runs:
            return None
        if self.figure == "added_p50_ms":
            return float(runs[level]["p50_ms"] - results["envoy"][level]["p50_ms"])
        return float(runs[level][self.figure])

    def verdict(self, results: Results, hi: str) -> str:
        value = self.value(results, hi)
        if value is None:
            return "n/a"
        return "PASS" if value <= self.limit else "MISS"


TARGETS = (
    Target("openai", "c1", "added_p50_ms", 1.2, "added p50 at c1, OpenAI route"),
    Target("translated", "c1", "added_p50_ms", 1.6, "added p50 at c1, translated route"),
    Target("openai", "hi", "cpu_ms_per_req", 0.9, "CPU per request at c16, OpenAI route"),
    Target("translated", "hi", "cpu_ms_per_req", 0.9, "CPU per request at c16, translated route"),
)
_SHORT = {"added_p50_ms": "+p50", "cpu_ms_per_req": "CPU"}


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den else "-"


def _row_targets(path: str, level: str, results: Results, hi: str) -> str:
    marks = []
    for t in TARGETS:
        if t.path == path and (hi if t.level == "hi" else t.level) == level:
            marks.append(f"{_SHORT[t.figure]} <= {t.limit:g} ms {t.verdict(results, hi)}")
    return "; ".join(marks)


def table(results: Results, counted: Mapping[str, Messages], hi: str) -> str:
    """Every path at both levels; the message columns are the exact counts of ``counted``."""
    base, bare = results["envoy"], results.get("bare")
    head = (
        "| path | conc | req/s | p50 ms | p99 ms | +p50 vs Envoy | +p50 vs bare | req/s vs Envoy | req/s vs bare "
        "| CPU ms/req | CPU vs Envoy | CPU vs bare | ext_proc streams/req | ext_proc msgs/req | authz calls/req "
        "| sidecar msgs/req | targets |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for path, runs in results.items():
        for level in ("c1", hi):
            r, e = runs[level], base[level]
            b = bare[level] if bare else None
            m = counted[path].per_request() if path in counted else r["messages_per_request"]
            errs = int(r["errors"] + r["socket_errors"])
            cells = [
                LABELS.get(path, path) + (f" ({errs} errors)" if errs else ""),
                level[1:],
                f"{r['rps']:.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['p50_ms'] - e['p50_ms']:+.2f}",
                f"{r['p50_ms'] - b['p50_ms']:+.2f}" if b else "-",
                _ratio(r["rps"], e["rps"]),
                _ratio(r["rps"], b["rps"]) if b else "-",
                f"{r['cpu_ms_per_req']:.3f}",
                _ratio(r["cpu_ms_per_req"], e["cpu_ms_per_req"]),
                _ratio(r["cpu_ms_per_req"], b["cpu_ms_per_req"]) if b else "-",
                f"{m['streams']:.2f}",
                f"{m['sent']:.2f}",
                f"{m['authz']:.2f}",
                f"{m['round_trips']:.2f}",
                _row_targets(path, level, results, hi),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def messages_table(counted: Mapping[str, Messages]) -> str:
    """gRPC messages per request and path, by ext_proc level."""
    lines = [
        "| path | requests | ext_proc streams | router-level msgs | upstream-level msgs | ext_proc answers "
        "| authz calls | sidecar msgs to answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, m in counted.items():
        per = m.per_request()
        figures = (
            per[k] for k in ("streams", "router_sent", "upstream_sent", "received", "authz", "round_trips")
        )
        lines.append(
            f"| {LABELS.get(path, path)} | {m.requests} | " + " | ".join(f"{v:.2f}" for v in figures) + " |"
        )
    return "\n".join(lines)


def targets(results: Results, hi: str) -> str:
    out = []
    for t in TARGETS:
        value = t.value(results, hi)
        shown = "not measured" if value is None else f"{value:.3f} ms"
        out.append(
            f"- {t.what.replace('c16', hi)}: {shown} (target <= {t.limit:g} ms): {t.verdict(results, hi)}"
        )
    return "\n".join(out)


def target_verdicts(results: Results, hi: str) -> list[dict[str, Any]]:
    return [
        {
            "what": t.what,
            "path": t.path,
            "figure": t.figure,
            "limit": t.limit,
            "value": t.value(results, hi),
            "verdict": t.verdict(results, hi),
        }
        for t in TARGETS
    ]
