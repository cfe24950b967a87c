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
- throughput: delta events per second through one stream, and summed over concurrent streams.

    make bench-stream     # or: .venv/bin/python bench/stream.py --events 400
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
sys.path.insert(0, str(ROOT / "bench"))

from run import free_port, gateway_stack, plain_proxy_config, start_envoy  # noqa: E402

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


def gateway_config(port: int, mock: int) -> dict:
    return {
        "config": {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()},
        "binds": [
            {
                "port": port,
                "listeners": [
                    {
                        "routes": [
                            {
                                "name": "anthropic",
                                "matches": [{"path": {"pathPrefix": "/anthropic"}}],
                                "backends": [
                                    {
                                        "ai": {
                                            "name": "anthropic",
                                            "provider": {"anthropic": {}},
                                            "hostOverride": f"127.0.0.1:{mock}",
                                        }
                                    }
                                ],
                                "policies": {"backendAuth": {"key": "bench-key"}},
                            }
                        ]
                    }
                ],
            }
        ],
    }


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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gw-bench-stream-"))
    fixtures = work / "fixtures" / "bench"
    fixtures.mkdir(parents=True)
    stream, event_size = anthropic_stream(args.events)
    (fixtures / "long.sse").write_bytes(stream)
    (fixtures / "short.sse").write_bytes(anthropic_stream(3)[0])

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
        plain_proxy_config(proxy_port, free_port(), mock_port), work, "envoy-alone", args.envoy_concurrency
    )
    stack = gateway_stack(gateway_config(gw_port, mock_port), work, args.envoy_concurrency)
    paths = {
        "envoy": (f"http://127.0.0.1:{proxy_port}/v1/messages", "messages"),
        "native": (f"http://127.0.0.1:{gw_port}/anthropic/v1/messages", "messages"),
        "translated": (f"http://127.0.0.1:{gw_port}/anthropic/v1/chat/completions", "completions"),
    }
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
                    "x-mock-chunk-bytes": str(event_size),
                    "x-mock-chunk-delay-ms": "200",
                }
                fast = {**hdr, "x-mock-fixture": "bench/long.sse", "x-mock-chunk-bytes": str(event_size)}
                for _ in range(3):  # warm connections
                    read_stream(client, url, body, fast)
                ttft = [read_stream(client, url, body, slow)[0] for _ in range(args.runs // 3 + 3)]
                single = [read_stream(client, url, body, fast) for _ in range(args.runs)]
                assert all(n == args.events for _, _, n in single), (name, [n for _, _, n in single])
                started = time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    futures = [
                        pool.submit(read_stream, client, url, body, fast)
                        for _ in range(args.concurrency * 12)
                    ]
                    counts = [f.result()[2] for f in futures]
                elapsed = time.perf_counter() - started
                results[name] = {
                    "ttft_ms": statistics.median(ttft) * 1000,
                    "stream_ms": statistics.median(t for _, t, _ in single) * 1000,
                    "events_per_s": args.events / statistics.median(t for _, t, _ in single),
                    "aggregate_events_per_s": sum(counts) / elapsed,
                }
        report(results, args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        stack.stop()
        for proc in (envoy, mock):
            proc.terminate()
            proc.wait(timeout=5)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    base = results["envoy"]
    print(f"{args.events} delta events per stream, one write each; aggregate over {args.concurrency} streams")
    print(
        f"{'path':<12}{'TTFT ms':>9}{'+TTFT ms':>10}{'events/s':>10}{'vs envoy':>10}{'agg ev/s':>10}{'vs envoy':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<12}{r['ttft_ms']:>9.2f}{r['ttft_ms'] - base['ttft_ms']:>10.2f}"
            f"{r['events_per_s']:>10.0f}{r['events_per_s'] / base['events_per_s']:>10.0%}"
            f"{r['aggregate_events_per_s']:>10.0f}{r['aggregate_events_per_s'] / base['aggregate_events_per_s']:>10.0%}"
        )


if __name__ == "__main__":
    main()
