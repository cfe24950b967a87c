"""Response guardrails: each response guard over the answer, in the client's format.

A whole answer: its choices' (or content blocks') texts are checked, masked in place, or the
answer is replaced by an error in the client's shape with the guard's status. A stream: the
text deltas go through each guard's stream filter (extproc/guardrails/stream.py); a reject
ends the stream with an error event. Decisions are recorded once per guard per answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.guardrails import base
from extproc.guardrails.base import ALLOW, MASK, Guard, TextItem, Verdict
from extproc.guardrails.stream import GuardedStream
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


class ResponseGuardrails(Stage):
    name = "response_guardrails"
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY

    def __init__(self, guards: list[Guard], streaming: bool = True) -> None:
        self.guards = guards
        self.streaming = streaming

    async def on_response_chunk(self, ex: Exchange, data: bytes) -> bytes:  # type: ignore[override]
        if ex.status != 200 or ex.api not in _GUARDED_APIS:
            return data
        if not ex.stream:
            return await self._whole(ex, data)
        if not self.streaming:
            return data
        stream = ex.stage_state.get(self.name)
        if stream is None:
            stream = ex.stage_state[self.name] = GuardedStream(
                ex.api, lambda: [g.stream(ex) for g in self.guards]
            )
        return await stream.feed(data)

    async def _whole(self, ex: Exchange, data: bytes) -> bytes:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        slots = answer_slots(ex.api, body)
        texts = [holder[key] for holder, key in slots]
        changed = False
        for guard in self.guards:
            items = [TextItem("assistant", "messages", t) for t in texts]
            verdict = await guard.check("response", items, ex) if items else Verdict(ALLOW)
            base.record(ex, "response", guard, verdict)
            if verdict.blocks:
                raise verdict.error()
            if verdict.action == MASK and verdict.texts:
                for i, new in enumerate(verdict.texts[: len(texts)]):
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
