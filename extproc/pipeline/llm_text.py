"""Every piece of text in a client's LLM request, by scope, for guardrails to read and rewrite.

Scopes (agentgateway's): ``systemPrompt`` (system and developer messages; a Messages request's
``system``), ``messages`` (user and assistant text; an embeddings request's ``input``),
``toolInput`` (the arguments of the tool calls the assistant made), ``toolOutput`` (tool
results). ``visit`` calls ``fn(role, scope, text)`` for each text of the chosen scopes, in
request order, and writes back what it returns (None: unchanged); it returns whether anything
changed. Tool arguments are JSON: their string values are visited one by one, so a replacement
cannot break the JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

Visitor = Callable[[str, str, str], "str | None"]
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TOOL_ROLES = frozenset({"tool", "function"})


class _Walk:
    __slots__ = ("changed", "fn", "scopes")

    def __init__(self, scopes: frozenset[str], fn: Visitor) -> None:
        self.scopes, self.fn, self.changed = scopes, fn, False

    def slot(self, holder: Any, key: Any, role: str, scope: str) -> None:
        """``holder[key]`` if it is a string of a wanted scope."""
        if scope not in self.scopes:
            return
        text = holder[key]
        if isinstance(text, str) and text:
            new = self.fn(role, scope, text)
            if new is not None and new != text:
                holder[key] = new
                self.changed = True

    def content(self, holder: Any, key: str, role: str, scope: str, block_type: str = "text") -> None:
        """A string, or a list of text parts/blocks (other parts, like images, are left alone)."""
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, str):
            self.slot(holder, key, role, scope)
        elif isinstance(value, list):
            for part in value:
                if isinstance(part, dict) and part.get("type") == block_type and "text" in part:
                    self.slot(part, "text", role, scope)

    def json_values(self, value: Any, role: str) -> None:
        """Every string inside a tool call's input object."""
        if isinstance(value, dict):
            for key in value:
                if isinstance(value[key], str):
                    self.slot(value, key, role, "toolInput")
                else:
                    self.json_values(value[key], role)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    self.slot(value, i, role, "toolInput")
                else:
                    self.json_values(item, role)

    def arguments(self, holder: dict[str, Any], role: str) -> None:
        """A tool call's arguments as a JSON string (OpenAI); not JSON: the string as it is."""
        raw = holder.get("arguments")
        if not isinstance(raw, str) or "toolInput" not in self.scopes:
            return
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.slot(holder, "arguments", role, "toolInput")
            return
        before = self.changed
        self.changed = False
        self.json_values(parsed, role)
        if self.changed:
            holder["arguments"] = orjson.dumps(parsed).decode()
        self.changed = self.changed or before


def visit(api: str, body: dict[str, Any], scopes: frozenset[str], fn: Visitor) -> bool:
    walk = _Walk(scopes, fn)
    if api == "embeddings":
        inputs = body.get("input")
        if isinstance(inputs, str):
            walk.slot(body, "input", "user", "messages")
        elif isinstance(inputs, list):
            for i, item in enumerate(inputs):
                if isinstance(item, str):
                    walk.slot(inputs, i, "user", "messages")
        return walk.changed
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    if api == "messages":
        system = body.get("system")
        if isinstance(system, str | list):
            walk.content(body, "system", "system", "systemPrompt")
        for msg in messages:
            if isinstance(msg, dict):
                _anthropic_message(walk, msg)
    else:
        for msg in messages:
            if isinstance(msg, dict):
                _openai_message(walk, msg)
    return walk.changed


def _openai_message(walk: _Walk, msg: dict[str, Any]) -> None:
    role = str(msg.get("role") or "user")
    if role in _SYSTEM_ROLES:
        walk.content(msg, "content", role, "systemPrompt")
    elif role in _TOOL_ROLES:
        walk.content(msg, "content", "tool", "toolOutput")
    else:
        walk.content(msg, "content", role, "messages")
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            walk.arguments(fn, role)
    legacy = msg.get("function_call")
    if isinstance(legacy, dict):
        walk.arguments(legacy, role)


def _anthropic_message(walk: _Walk, msg: dict[str, Any]) -> None:
    role = str(msg.get("role") or "user")
    content = msg.get("content")
    if isinstance(content, str):
        walk.slot(msg, "content", role, "messages")
        return
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            walk.slot(block, "text", role, "messages")
        elif kind == "tool_use" and "toolInput" in walk.scopes:
            walk.json_values(block.get("input"), role)
        elif kind == "tool_result":
            walk.content(block, "content", "tool", "toolOutput")
