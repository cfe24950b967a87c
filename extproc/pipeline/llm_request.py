"""A parsed view of the client's LLM request that stages read and rewrite.

It wraps the client's own JSON body (OpenAI chat, Anthropic Messages or OpenAI
embeddings) without converting it, so an untouched request goes to the provider
byte for byte. Whoever changes the body calls ``mark_changed``; the router phase
then serializes it once, after every stage has run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from extproc.pipeline import llm_text

Json = dict[str, Any]


class LLMRequest:
    __slots__ = ("api", "body", "changed")

    def __init__(self, api: str, body: Json) -> None:
        self.api = api  # completions, messages, embeddings
        self.body = body
        self.changed = False

    def mark_changed(self) -> None:
        self.changed = True

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @model.setter
    def model(self, value: str) -> None:
        if self.body.get("model") != value:
            self.body["model"] = value
            self.changed = True

    @property
    def stream(self) -> bool:
        return self.api != "embeddings" and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[Any]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[Any]:
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else []

    @property
    def max_tokens(self) -> int | None:
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def wants_usage_chunk(self) -> bool:
        """An OpenAI streaming client that asked for the final usage chunk itself."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def visit_text(self, scopes: Iterable[str], fn: Callable[[str, str, str], str | None]) -> bool:
        """Each text of these scopes (systemPrompt, messages, toolInput, toolOutput) in request order:
        ``fn(role, scope, text)`` returns its replacement or None (extproc/pipeline/llm_text.py)."""
        changed = llm_text.visit(self.api, self.body, frozenset(scopes), fn)
        self.changed = self.changed or changed
        return changed

    def texts(self, scopes: Iterable[str]) -> list[tuple[str, str, str]]:
        """(role, scope, text) of each text ``visit_text`` would visit."""
        out: list[tuple[str, str, str]] = []
        self.visit_text(scopes, lambda role, scope, text: out.append((role, scope, text)))
        return out

    def add_messages(self, where: str, messages: list[Json]) -> None:
        """Add messages before (``prepend``) or after (``append``) the client's.

        Messages clients keep system text in ``system``, so system and developer
        entries go there; on chat clients every entry is a message.
        """
        if not messages:
            return
        turns = list(messages)
        if self.api == "messages":
            system = [m["content"] for m in turns if m["role"] in ("system", "developer")]
            turns = [m for m in turns if m["role"] not in ("system", "developer")]
            if system:
                self._add_system(where, system)
        if turns:
            current = self.messages
            self.body["messages"] = turns + current if where == "prepend" else current + turns
        self.changed = True

    def _add_system(self, where: str, texts: list[str]) -> None:
        blocks = [{"type": "text", "text": t} for t in texts]
        current = self.body.get("system")
        if current is None or current == "" or current == []:
            self.body["system"] = "\n\n".join(texts) if len(texts) == 1 else blocks
            return
        existing = [{"type": "text", "text": current}] if isinstance(current, str) else list(current)
        self.body["system"] = blocks + existing if where == "prepend" else existing + blocks
