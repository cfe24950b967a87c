"""Response guardrails: each response guard over the answer, in the client's format.

A whole answer: its choices' (or content blocks') texts are checked, masked in place, or the
answer is replaced by an error in the client's shape with the guard's status. A stream: the
text deltas go through each guard's stream filter (extproc/guardrails/stream.py); a reject
ends the stream with an error event. Decisions are recorded once per guard per answer.

A guard sees what its scope names: ``messages`` (the default), the answer's text; ``toolInput``,
the arguments of its tool calls (OpenAI's ``function.arguments`` JSON text; the strings inside an
Anthropic ``tool_use`` input), whole or streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from extproc.guardrails import base
from extproc.guardrails.base import ALLOW, MASK, Guard, StreamFilter, TextItem, Verdict
from extproc.guardrails.stream import GuardedStream, PassThrough
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage

_GUARDED_APIS = frozenset({"completions", "messages"})


def answer_slots(api: str, body: Any) -> list[tuple[Any, Any]]:
    """Where an answer's texts are: (holder, key) pairs, in order."""
    out: list[tuple[Any, Any]] = []
    if not isinstance(body, dict):
        return out
    if api == "messages":
        for block in body.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append((block, "text"))
        return out
    for choice in body.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str) and content:
            out.append((message, "content"))
        elif isinstance(content, list):
            out += [(p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return out


def tool_slots(api: str, body: Any) -> list[tuple[Any, Any]]:
    """Where an answer's tool-call arguments are: each OpenAI call's ``function.arguments`` (its
    JSON text), each string inside an Anthropic ``tool_use`` block's ``input`` (an object)."""
    out: list[tuple[Any, Any]] = []
    if not isinstance(body, dict):
        return out
    if api == "messages":
        for block in body.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                out += _strings(block, "input")
        return out
    for choice in body.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                out.append((function, "arguments"))
    return out


def _strings(holder: Any, key: Any) -> list[tuple[Any, Any]]:
    """The string leaves under ``holder[key]``, as (holder, key) pairs, in order."""
    value = holder[key]
    if isinstance(value, str):
        return [(holder, key)] if value else []
    if isinstance(value, dict):
        return [slot for k in value for slot in _strings(value, k)]
    if isinstance(value, list):
        return [slot for i in range(len(value)) for slot in _strings(value, i)]
    return []


class ResponseGuardrails(Stage):
    name = "response_guardrails"
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    def __init__(self, guards: list[Guard], streaming: bool = True) -> None:
        self.guards = guards
        self.streaming = streaming
        self.checks_tools = any("toolInput" in g.scope for g in guards)

    async def on_response_chunk(self, ex: Exchange, data: bytes) -> bytes:  # type: ignore[override]
        if ex.status != 200 or ex.api not in _GUARDED_APIS:
            return data
        if not ex.stream:
            return await self._whole(ex, data)
        if not self.streaming:
            return data
        stream = ex.stage_state.get(self.name)
        if stream is None:
            # Without a guard on tool arguments they pass as they come, unparsed.
            tools = self._filters(ex, "toolInput") if self.checks_tools else None
            stream = ex.stage_state[self.name] = GuardedStream(ex.api, self._filters(ex, "messages"), tools)
        return await stream.feed(data)

    def _filters(self, ex: Exchange, scope: str) -> Callable[[], list[StreamFilter]]:
        """One chain's filters: each guard's own where its scope has ``scope``, else a pass-through."""
        return lambda: [g.stream(ex) if scope in g.scope else PassThrough() for g in self.guards]

    async def _whole(self, ex: Exchange, data: bytes) -> bytes:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        answer = answer_slots(ex.api, body)
        tools = tool_slots(ex.api, body) if self.checks_tools else []
        slots = answer + tools
        texts = [holder[key] for holder, key in slots]
        scopes = ["messages"] * len(answer) + ["toolInput"] * len(tools)
        changed = False
        for guard in self.guards:
            mine = [i for i, scope in enumerate(scopes) if scope in guard.scope]
            items = [TextItem("assistant", scopes[i], texts[i]) for i in mine]
            verdict = await guard.check("response", items, ex) if items else Verdict(ALLOW)
            base.record(ex, "response", guard, verdict)
            if verdict.blocks:
                raise verdict.error()
            if verdict.action == MASK and verdict.texts:
                for i, new in zip(mine, verdict.texts, strict=False):
                    if new is not None and new != texts[i]:
                        texts[i], changed = new, True
        if not changed:
            return data
        for (holder, key), text in zip(slots, texts, strict=True):
            holder[key] = text
        return orjson.dumps(body)

    async def on_complete(self, ex: Exchange) -> None:
        stream = ex.stage_state.get(self.name)
        if not isinstance(stream, GuardedStream):
            return
        chains = stream.chains_seen()
        for i, guard in enumerate(self.guards):
            verdict = Verdict(ALLOW)
            for chain in chains:
                base.merge(verdict, chain[i].verdict)
            base.record(ex, "response", guard, verdict)
        if stream.rejection is not None:
            ex.error = ex.error or f"a response guardrail ended the stream: {stream.rejection.message}"
