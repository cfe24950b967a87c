"""Streaming through the gateway against Envoy alone streaming the same upstream, in one run.

The upstream is the built-in mock replaying a generated Anthropic Messages stream
(``message_start``, N ``content_block_delta`` events of equal size, ``message_stop``),
one write per event. Three paths read it:

- ``envoy``:  Envoy alone, a plain route; the client reads Anthropic events as they are;
- ``native``: the gateway, Anthropic SDK style ``/v1/messages`` on an Anthropic route
  (credentials only; the stream is not sent to the sidecar);
- ``translated``: the gateway, OpenAI ``/v1/chat/completions`` on the same Anthropic
  upstream: every event goes through extproc and becomes a ``chat.completion.chunk``.

Measured:
- time to first token (TTFT): the upstream sends its first delta at once and the next
  only after 200 ms, so the first token cannot wait for the rest; median of sequential runs;
- throughput: delta events per second through one stream (from the request, and from the
  first token on, which leaves out the per-request cost), and summed over concurrent streams.

    .venv/bin/python bench/stream.py --events 400     # bench/run.py runs it too
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.envoys import free_port, gateway_config, gateway_stack, plain_proxy_config, start_envoy  # noqa: E402

WORD = "token "  # each delta carries the same text, so every event has the same size


def anthropic_stream(deltas: int) -> tuple[bytes, int]:
    """The stream, and the size of one delta event."""

    def event(kind: str, data: dict) -> bytes:
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    out = [
        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-bench",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        ),
        event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    delta = event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORD}},
    )
    out += [delta] * deltas
    out += [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": deltas},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(out), len(delta)


def stream_gateway_config(port: int, mock: int, relay: bool = True) -> dict:
    route = {
        "name": "anthropic",
        "matches": [{"path": {"pathPrefix": "/anthropic"}}],
        "backends": [
            {"ai": {"name": "anthropic", "provider": {"anthropic": {}}, "hostOverride": f"127.0.0.1:{mock}"}}
        ],
        # The mock's x-mock-* controls are client headers: the allowlist must let them through.
        "policies": {"backendAuth": {"key": "bench-key"}, "ai": {"forwardHeaders": ["x-mock-*"]}},
    }
    config = gateway_config(port, [route])
    config["config"]["limits"] = {"streamRelay": relay}  # streams' provider leg through the stream relay
    return config


def read_stream(
    client: httpx.Client, url: str, body: dict, headers: dict[str, str]
) -> tuple[float, float, int]:
    """(seconds to first token, seconds to the end, delta events seen) for one streamed request."""
    started = time.perf_counter()
    first = 0.0
    deltas = 0
    with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            if WORD.strip() in line and ('"text_delta"' in line or '"content":"' in line):
                deltas += 1
                if not first:
                    first = time.perf_counter() - started
    return first, time.perf_counter() - started, deltas


def measure(
    events: int,
    runs: int,
    concurrency: int,
    envoy_concurrency: int,
    work: Path,
    quick: bool = False,
    relay: bool = True,
) -> dict[str, dict[str, float]]:
    """TTFT and events/s for each path; starts and stops its own mock, Envoy and gateway."""
    fixtures = work / "fixtures" / "bench"
    fixtures.mkdir(parents=True)
    stream, event_size = anthropic_stream(events)
    (fixtures / "long.sse").write_bytes(stream)
    short = anthropic_stream(3)[0]
    (fixtures / "short.sse").write_bytes(short)
    # The slow stream's first write ends with the first delta, the next comes 200 ms later.
    first_write = short.index(b"\n\n", short.index(b"content_block_delta")) + 2

    mock_port, proxy_port, gw_port = free_port(), free_port(), free_port()
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
    envoy = start_envoy(
        plain_proxy_config(proxy_port, free_port(), mock_port), work, "envoy-alone", envoy_concurrency
    )
    stack = gateway_stack(stream_gateway_config(gw_port, mock_port, relay), work, envoy_concurrency)
    paths = {
        "envoy": (f"http://127.0.0.1:{proxy_port}/v1/messages", "messages"),
        "native": (f"http://127.0.0.1:{gw_port}/anthropic/v1/messages", "messages"),
        "translated": (f"http://127.0.0.1:{gw_port}/anthropic/v1/chat/completions", "completions"),
    }
    per_worker = 3 if quick else 12  # streams each parallel worker reads in the aggregate window
    try:
        stack.start(timeout=30)
        results: dict[str, dict[str, float]] = {}
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            for name, (url, api) in paths.items():
                body: dict = {
                    "model": "claude-bench",
                    "max_tokens": 1024,
                    "stream": True,
                    "messages": [{"role": "user", "content": "go"}],
                }
                hdr = {"x-api-key": "client", "anthropic-version": "2023-06-01"} if api == "messages" else {}
                slow = {
                    **hdr,
                    "x-mock-fixture": "bench/short.sse",
                    "x-mock-chunk-bytes": str(first_write),
                    "x-mock-chunk-delay-ms": "200",
                }
                fast = {**hdr, "x-mock-fixture": "bench/long.sse", "x-mock-chunk-bytes": str(event_size)}
                for _ in range(3):  # warm connections
                    read_stream(client, url, body, fast)
                ttft = [read_stream(client, url, body, slow)[0] for _ in range(runs // 3 + 3)]
                single = [read_stream(client, url, body, fast) for _ in range(runs)]
                if any(n != events for _, _, n in single):
                    raise AssertionError(
                        f"{name}: delta events seen {[n for _, _, n in single]}, sent {events}"
                    )
                started = time.perf_counter()
                with ThreadPoolExecutor(concurrency) as pool:
                    futures = [
                        pool.submit(read_stream, client, url, body, fast)
                        for _ in range(concurrency * per_worker)
                    ]
                    counts = [f.result()[2] for f in futures]
                elapsed = time.perf_counter() - started
                one = statistics.median(t for _, t, _ in single)
                results[name] = {
                    "ttft_ms": statistics.median(ttft) * 1000,
                    "stream_ms": one * 1000,
                    "events_per_s": events / one,
                    # Without the request's own cost (TTFT shows that): the stream's pace alone.
                    "events_per_s_after_first": (events - 1) / statistics.median(t - f for f, t, _ in single),
                    "aggregate_events_per_s": sum(counts) / elapsed,
                }
        return results
    finally:
        stack.stop()
        for proc in (envoy, mock):
            proc.terminate()
            proc.wait(timeout=5)


def table(results: dict[str, dict[str, float]]) -> str:
    base = results["envoy"]
    lines = [
        "| path | TTFT ms | +TTFT ms vs Envoy | events/s (1 stream) | vs Envoy | after 1st token "
        "| vs Envoy | events/s (aggregate) | vs Envoy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {LABELS[name]} | {r['ttft_ms']:.2f} | {r['ttft_ms'] - base['ttft_ms']:+.2f} "
            f"| {r['events_per_s']:.0f} | {r['events_per_s'] / base['events_per_s']:.2f}x "
            f"| {r['events_per_s_after_first']:.0f} "
            f"| {r['events_per_s_after_first'] / base['events_per_s_after_first']:.2f}x "
            f"| {r['aggregate_events_per_s']:.0f} | {r['aggregate_events_per_s'] / base['aggregate_events_per_s']:.2f}x |"
        )
    return "\n".join(lines)


LABELS = {
    "envoy": "Envoy alone",
    "native": "gateway, Anthropic client (native)",
    "translated": "gateway, OpenAI -> Anthropic",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=400, help="delta events per stream")
    parser.add_argument("--runs", type=int, default=15, help="sequential streams per measurement")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="parallel streams for aggregate throughput"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--envoy-concurrency", type=int, default=1, help="worker threads of both Envoys")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--no-stream-relay",
        action="store_true",
        help="limits.streamRelay: false (streams' provider leg direct)",
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.runs, args.concurrency = min(args.events, 100), min(args.runs, 3), 2
    work = Path(tempfile.mkdtemp(prefix="gw-bench-stream-"))
    relay = not args.no_stream_relay
    results = measure(
        args.events, args.runs, args.concurrency, args.envoy_concurrency, work, args.quick, relay
    )
    print(
        f"{args.events} delta events per stream, one write each; aggregate over {args.concurrency} streams; "
        f"stream relay {'on' if relay else 'off'}\n"
    )
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
