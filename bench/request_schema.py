"""The cost of checking a client request at the edge (extproc.schema), per request, in process.

Three bodies: a typical chat request, a typical Anthropic Messages request, and an agent's
40 kB chat history (90 turns, 20 tools); for each, the median of many ``validate`` calls and,
beside it, orjson's parse of the same body for scale.

    .venv/bin/python bench/request_schema.py --rounds 20000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extproc import schema  # noqa: E402

CHAT = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello, how are you?"},
    ],
    "temperature": 0.7,
    "max_tokens": 256,
    "stream": True,
    "stream_options": {"include_usage": True},
}
MESSAGES = {
    "model": "claude-sonnet-4",
    "max_tokens": 1024,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    "stream": True,
}


def _agent() -> dict[str, Any]:
    turns: list[dict[str, Any]] = [{"role": "system", "content": "x" * 2000}]
    for i in range(30):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        turns += [
            {"role": "user", "content": [{"type": "text", "text": "q" * 500}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "r" * 300},
        ]
    tools = [
        {"type": "function", "function": {"name": f"f{i}", "description": "d" * 200,
                                          "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}
        for i in range(20)
    ]  # fmt: skip
    return {"model": "gpt-4o", "messages": turns, "tools": tools, "stream": True}


def _median_us(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        samples.append((time.perf_counter() - started) / rounds * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    schema.warm_up()
    for name, api, body in (("chat", "completions", CHAT), ("messages", "messages", MESSAGES),
                            ("agent chat", "completions", _agent())):  # fmt: skip
        raw = orjson.dumps(body)
        rounds = max(100, args.rounds // max(1, len(raw) // 1000))
        validate = _median_us(lambda api=api, body=body: schema.validate(api, body), rounds)
        parse = _median_us(lambda raw=raw: orjson.loads(raw), rounds)
        print(f"{name:11} {len(raw):6} bytes  validate {validate:7.1f} us   (orjson.loads {parse:6.1f} us)")


if __name__ == "__main__":
    main()
