"""The regex guard's cost, on versus off, in one run on this machine.

One gateway serves each route twice: ``plain`` (no guardrails) and ``guarded`` (the regex guard,
every builtin and a custom pattern, masking on the request and on the answer).

- Requests: wrk against an OpenAI route whose upstream is an Envoy answering with a fixed body
  (so the upstream is never the bottleneck); the prompt carries an email and a phone number, so
  the guarded route masks and re-serializes every request. Requests/s and p50 at concurrency 1
  and 16.
- Streams: the mock replays an Anthropic stream of N equal text deltas; an Anthropic client
  (native: without guardrails the stream does not even pass through the sidecar) and an OpenAI
  client (translated) read it. Delta events/s through one stream, and time to first token: the
  first delta is sent at once and the next only after ``--gap-ms``, once with deltas that end in
  a space (the window holds nothing back) and once with deltas that end in a word (the window
  holds that word until the next delta shows it is no start of an address or a number).

    .venv/bin/python bench/guardrails.py             # about a minute and a half
    .venv/bin/python bench/guardrails.py --quick     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402

RULES = [{"builtin": b} for b in ("ssn", "creditCard", "phoneNumber", "email", "caSin")]
GUARD = {
    "request": [{"regex": {"rules": [*RULES, {"pattern": "sk-[a-z0-9]{16,}", "name": "API_KEY"}]}}],
    "response": [{"regex": {"rules": RULES}}],
}
PROMPT = (
    "Please summarise the following support ticket in two sentences. The customer, reachable at "
    "jane.roe@example.org or (555) 123-4567, reports that the export job fails every night after "
    "the upgrade; logs show a timeout talking to the storage service and retries do not help. "
) * 3
REQUEST = json.dumps({"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]})


def routes(host: str, provider: dict) -> list[dict]:
    plain = envoys.provider_route("plain", provider, host)
    guarded = envoys.provider_route("guarded", provider, host)
    for r in (plain, guarded):
        r["policies"]["ai"] = {"forwardHeaders": ["x-mock-*"]}
    guarded["policies"]["ai"]["promptGuard"] = GUARD
    return [plain, guarded]


def start_gateway(rs: list[dict], work: Path, name: str) -> tuple[Any, int]:
    port = envoys.free_port()
    (work / name).mkdir(parents=True, exist_ok=True)
    stack = envoys.gateway_stack(envoys.gateway_config(port, rs), work / name, 1)
    try:
        stack.start(timeout=30)
    except BaseException:
        stack.stop()
        raise
    return stack, port


# --- requests ------------------------------------------------------------------------------------


def requests_bench(work: Path, seconds: int) -> dict[str, dict[str, dict[str, float]]]:
    up_port = envoys.free_port()
    upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
    stack = None
    script = measure.wrk_script(REQUEST, work)
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        stack, port = start_gateway(routes(f"127.0.0.1:{up_port}", {"openAI": {}}), work, "requests")
        for name in ("plain", "guarded"):
            url = f"http://127.0.0.1:{port}/{name}/v1/chat/completions"
            resp = httpx.post(url, content=REQUEST, headers={"content-type": "application/json"}, timeout=10)
            resp.raise_for_status()
            measure.wrk(url, 4, 1, script)  # warm up
            out[name] = {f"c{c}": measure.wrk(url, c, seconds, script) for c in (1, 16)}
            print(f"measured requests: {name}", file=sys.stderr)
    finally:
        if stack is not None:
            stack.stop()
        upstream.terminate()
        upstream.wait(timeout=5)
    return out


# --- streams -------------------------------------------------------------------------------------


def anthropic_stream(texts: list[str]) -> bytes:
    def event(kind: str, data: dict) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    message = {"id": "msg_b", "type": "message", "role": "assistant", "model": "claude-bench", "content": []}
    message |= {"stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}}
    out = [event("message_start", {"type": "message_start", "message": message})]
    out.append(
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for t in texts:
        out.append(
            event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
            )
        )
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": len(texts)},
            },
        )
    )
    out.append(event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def read(client: httpx.Client, url: str, body: dict, headers: dict[str, str]) -> tuple[float, float, int]:
    """(seconds to the first text, seconds to the end, text events seen)."""
    started, first, events = time.perf_counter(), 0.0, 0
    with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if (
                line.startswith("data:")
                and ('"text_delta"' in line or '"content":"' in line)
                and '"text":""' not in line
                and '"content":""' not in line
            ):
                events += 1
                first = first or time.perf_counter() - started
    return first, time.perf_counter() - started, events


def streams_bench(work: Path, deltas: int, runs: int, gap_ms: int) -> dict[str, dict[str, float]]:
    fixtures = work / "fixtures" / "bench"
    fixtures.mkdir(parents=True)
    (fixtures / "long.sse").write_bytes(anthropic_stream(["token "] * deltas))
    first_writes: dict[str, int] = {}
    for shape, texts in {
        "space": ["Hello ", "world ", "again "],
        "word": ["Hello", " world", " again"],
    }.items():
        data = anthropic_stream(texts)
        (fixtures / f"slow-{shape}.sse").write_bytes(data)
        first_writes[shape] = data.index(b"\n\n", data.index(b"content_block_delta")) + 2
    mock_port = envoys.free_port()
    mock = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extproc",
            "mock",
            "--port",
            str(mock_port),
            "--fixture-dir",
            str(work / "fixtures"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack = None
    event_size = len(anthropic_stream(["token "])) - len(anthropic_stream([]))
    body = {
        "model": "claude-bench",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": "go"}],
    }
    out: dict[str, dict[str, float]] = {}
    try:
        stack, port = start_gateway(routes(f"127.0.0.1:{mock_port}", {"anthropic": {}}), work, "streams")
        with httpx.Client(timeout=60) as client:
            for api, suffix in (("native", "v1/messages"), ("translated", "v1/chat/completions")):
                hdr = {"x-api-key": "client", "anthropic-version": "2023-06-01"} if api == "native" else {}
                fast = {**hdr, "x-mock-fixture": "bench/long.sse", "x-mock-chunk-bytes": str(event_size)}
                for name in ("plain", "guarded"):
                    url = f"http://127.0.0.1:{port}/{name}/{suffix}"
                    for _ in range(3):
                        read(client, url, body, fast)
                    single = [read(client, url, body, fast) for _ in range(runs)]
                    figures = {"events_per_s": deltas / statistics.median(t for _, t, _ in single)}
                    for shape, cut in first_writes.items():
                        slow = {
                            **hdr,
                            "x-mock-fixture": f"bench/slow-{shape}.sse",
                            "x-mock-chunk-bytes": str(cut),
                            "x-mock-chunk-delay-ms": str(gap_ms),
                        }
                        ttft = [read(client, url, body, slow)[0] for _ in range(max(3, runs // 3))]
                        figures[f"ttft_ms_{shape}"] = statistics.median(ttft) * 1000
                    out[f"{api}/{name}"] = figures
                    print(f"measured streams: {api}/{name}", file=sys.stderr)
    finally:
        if stack is not None:
            stack.stop()
        mock.terminate()
        mock.wait(timeout=5)
    return out


# --- report --------------------------------------------------------------------------------------


def report(reqs: dict, streams: dict, gap_ms: int) -> str:
    lines = ["## Requests (OpenAI route; the prompt has an email and a phone number to mask)", ""]
    lines += ["| route | req/s c1 | p50 ms c1 | req/s c16 | p50 ms c16 |", "|---|---|---|---|---|"]
    for name, r in reqs.items():
        lines.append(
            f"| {name} | {r['c1']['rps']:.0f} | {r['c1']['p50_ms']:.2f} | {r['c16']['rps']:.0f} | {r['c16']['p50_ms']:.2f} |"
        )
    errors = sum(w["errors"] + w["socket_errors"] for r in reqs.values() for w in r.values())
    if errors:
        lines.append(f"\n**{errors:.0f} failed requests in these windows: the figures are not comparable.**")
    p, g = reqs["plain"], reqs["guarded"]
    lines.append(
        f"\nguarded / plain: {g['c1']['rps'] / p['c1']['rps']:.2f}x at c1, {g['c16']['rps'] / p['c16']['rps']:.2f}x at c16"
    )
    lines += [
        "",
        f"## Streams (Anthropic upstream; TTFT with the second delta {gap_ms} ms after the first)",
        "",
    ]
    lines += [
        "| path | events/s (1 stream) | TTFT ms, deltas end in a space | TTFT ms, deltas end in a word |",
        "|---|---|---|---|",
    ]
    for name, r in streams.items():
        lines.append(
            f"| {name} | {r['events_per_s']:.0f} | {r['ttft_ms_space']:.2f} | {r['ttft_ms_word']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk window")
    parser.add_argument("--events", type=int, default=400, help="delta events per stream")
    parser.add_argument("--runs", type=int, default=9, help="sequential streams per measurement")
    parser.add_argument("--gap-ms", type=int, default=100, help="wait between the first and second delta")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.events, args.runs = 1, 100, 3
    measure.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="gw-bench-guard-"))
    reqs = requests_bench(work, args.duration)
    streams = streams_bench(work, args.events, args.runs, args.gap_ms)
    print(report(reqs, streams, args.gap_ms))
    if args.json:
        args.json.write_text(json.dumps({"requests": reqs, "streams": streams}, indent=2))


if __name__ == "__main__":
    main()
