"""Tool-call arguments through the response guards whose scope has toolInput: in streams, OpenAI
chat ``tool_calls[].function.arguments`` deltas and Anthropic ``input_json_delta``s, masked (at
every split of the arguments) or rejected; in whole answers, OpenAI's arguments and the strings of
an Anthropic ``tool_use`` input; left alone by guards without toolInput."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from extproc.config.guardrails import PromptGuard
from extproc.guardrails import build
from extproc.pipeline.stages.guard_response import ResponseGuardrails
from tests.unit.test_guardrails_guards import anthropic_event, events, openai_chunk

ARGS = '{"to": "jane.roe@example.org", "body": "hi"}'
MASKED = '{"to": "<EMAIL_ADDRESS>", "body": "hi"}'


def openai_tool_stream(pieces: list[str], second: list[str] | None = None) -> bytes:
    call = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "send", "arguments": ""}}
    out = openai_chunk({"role": "assistant", "content": None, "tool_calls": [call]})
    out += b"".join(
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces
    )
    if second is not None:
        other = {"index": 1, "id": "call_1", "type": "function", "function": {"name": "log", "arguments": ""}}
        out += openai_chunk({"tool_calls": [other]})
        out += b"".join(
            openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": p}}]}) for p in second
        )
    return out + openai_chunk({}, "tool_calls") + b"data: [DONE]\n\n"


def anthropic_tool_stream(pieces: list[str]) -> bytes:
    out = anthropic_event("message_start", {"type": "message_start", "message": {"id": "m", "content": []}})
    block = {"type": "tool_use", "id": "toolu_0", "name": "send", "input": {}}
    out += anthropic_event(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    for p in pieces:
        delta = {"type": "input_json_delta", "partial_json": p}
        out += anthropic_event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    out += anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += anthropic_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}})
    return out + anthropic_event("message_stop", {"type": "message_stop"})


class FakeExchange:
    """What the response stage reads of an exchange for a streamed answer."""

    def __init__(self, api: str) -> None:
        self.api, self.status, self.stream = api, 200, True
        self.stage_state: dict[str, Any] = {}
        self.guardrails: list[dict] = []
        self.error: str | None = None


def guarded(api: str, config: dict, stream: bytes) -> tuple[bytes, FakeExchange]:
    _, response = build(PromptGuard.model_validate(config))
    stage, ex = ResponseGuardrails(response), FakeExchange(api)

    async def go() -> bytes:
        out = b"".join(
            [await stage.on_response_chunk(ex, stream[i : i + 7]) for i in range(0, len(stream), 7)]
        )
        await stage.on_complete(ex)  # type: ignore[arg-type]
        return out

    return asyncio.run(go()), ex


def arguments(api: str, data: bytes) -> dict[int, str]:
    """Each tool call's arguments as the client assembles them."""
    out: dict[int, str] = {}
    for name, d in events(api, data):
        if api == "messages":
            if name == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
                out[d["index"]] = out.get(d["index"], "") + d["delta"]["partial_json"]
        elif isinstance(d, dict) and d.get("choices"):
            for call in d["choices"][0]["delta"].get("tool_calls") or []:
                piece = (call.get("function") or {}).get("arguments") or ""
                out[call["index"]] = out.get(call["index"], "") + piece
    return out


def mask(scope: list[str]) -> dict:
    return {"response": [{"regex": {"rules": [{"builtin": "email"}]}, "scope": scope}]}


STREAMS = {"completions": openai_tool_stream, "messages": anthropic_tool_stream}


@pytest.mark.parametrize("api", list(STREAMS))
def test_tool_arguments_are_masked_at_every_split(api: str) -> None:
    start = ARGS.index("jane")
    for cut in range(start, start + len("jane.roe@example.org") + 1):
        out, ex = guarded(api, mask(["messages", "toolInput"]), STREAMS[api]([ARGS[:cut], ARGS[cut:]]))
        assert arguments(api, out) == {0: MASKED}, cut
        assert b"jane" not in out and b"example.org" not in out
        json.loads(arguments(api, out)[0])  # still JSON
        assert ex.guardrails == [
            {"phase": "response", "guard": "regex", "action": "mask", "matched": ["email"]}
        ]


@pytest.mark.parametrize("api", list(STREAMS))
def test_without_tool_input_in_scope_arguments_pass_unchanged(api: str) -> None:
    source = STREAMS[api]([ARGS[:20], ARGS[20:]])
    out, ex = guarded(api, mask(["messages"]), source)
    assert out == source and ex.guardrails[0]["action"] == "allow"


def test_openai_parallel_calls_are_each_checked_and_held_text_goes_before_the_next_call() -> None:
    out, _ = guarded(
        "completions",
        mask(["toolInput"]),
        openai_tool_stream([ARGS[:15], ARGS[15:]], ['{"who": "a@b', '.co"}']),
    )
    assert arguments("completions", out) == {0: MASKED, 1: '{"who": "<EMAIL_ADDRESS>"}'}
    order = [
        call["index"]
        for _, d in events("completions", out)
        if isinstance(d, dict) and d.get("choices")
        for call in d["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert order == sorted(order)  # call 0's held arguments went out before call 1 began
    finish = [d for _, d in events("completions", out) if isinstance(d, dict) and d.get("choices")][-1]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("api", list(STREAMS))
def test_a_reject_in_tool_arguments_ends_the_stream(api: str) -> None:
    config = {
        "response": [
            {
                "regex": {"action": "reject", "rules": [{"builtin": "email"}]},
                "scope": ["toolInput"],
                "rejection": {"body": "no emails in tools"},
            }
        ]
    }
    out, ex = guarded(api, config, STREAMS[api]([ARGS[:14], ARGS[14:30], ARGS[30:]]))
    assert b"jane" not in out and b"no emails in tools" in out
    last = events(api, out)[-1]
    assert last[0] == "error" if api == "messages" else last[1] == "[DONE]"
    assert ex.guardrails[0]["action"] == "reject" and "ended the stream" in (ex.error or "")


# --- whole answers -------------------------------------------------------------------------------


def whole(api: str, config: dict, body: dict) -> tuple[dict, FakeExchange]:
    _, response = build(PromptGuard.model_validate(config))
    stage, ex = ResponseGuardrails(response), FakeExchange(api)
    ex.stream = False
    out = asyncio.run(stage.on_response_chunk(ex, json.dumps(body).encode()))  # type: ignore[arg-type]
    return json.loads(out), ex


def chat_answer(arguments: str) -> dict:
    call = {"id": "call_0", "type": "function", "function": {"name": "send", "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def messages_answer(tool_input: dict) -> dict:
    content = [
        {"type": "text", "text": "Sending to jane.roe@example.org"},
        {"type": "tool_use", "id": "toolu_0", "name": "send", "input": tool_input},
    ]
    return {"id": "m", "type": "message", "role": "assistant", "content": content}


def test_whole_chat_answer_tool_arguments_are_masked() -> None:
    out, _ = whole("completions", mask(["messages", "toolInput"]), chat_answer(ARGS))
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == MASKED
    untouched, _ = whole("completions", mask(["messages"]), chat_answer(ARGS))
    assert untouched["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == ARGS


def test_whole_messages_answer_tool_input_strings_are_masked() -> None:
    tool_input = {"to": "jane.roe@example.org", "cc": ["a@b.co", 3], "note": {"x": "call a@b.co"}}
    out, ex = whole("messages", mask(["toolInput"]), messages_answer(tool_input))
    assert out["content"][1]["input"] == {
        "to": "<EMAIL_ADDRESS>",
        "cc": ["<EMAIL_ADDRESS>", 3],
        "note": {"x": "call <EMAIL_ADDRESS>"},
    }
    assert out["content"][0]["text"] == "Sending to jane.roe@example.org"  # text is not in this scope
    assert ex.guardrails[0]["action"] == "mask"


def test_whole_answer_reject_in_tool_arguments() -> None:
    from extproc.pipeline.stage import Denied

    config = {
        "response": [{"regex": {"action": "reject", "rules": [{"builtin": "email"}]}, "scope": ["toolInput"]}]
    }
    with pytest.raises(Denied):
        whole("completions", config, chat_answer(ARGS))
    assert whole("completions", config, chat_answer('{"to": "nobody"}'))[1].guardrails[0]["action"] == "allow"
