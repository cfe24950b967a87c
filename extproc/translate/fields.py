"""Which top-level request fields a translator carries, may drop, or must refuse.

Each translator to another provider's API declares one ``FieldTable``. A field is:

- ``mapped``: the translator expresses it for the provider (some mapped fields
  still refuse values the provider lacks, e.g. ``n`` above 1; the translator checks);
- ``ignored``: dropping it leaves the answer's meaning unchanged; the table says why;
- ``unsupported``: it would change the answer and the provider cannot express it.
  It is accepted only at its no-op value (``presence_penalty: 0``, ``logprobs:
  false``), which asks for nothing, so clients that send defaults keep working;
- anything else is unknown and refused too. An unknown field is most likely a newer
  API parameter this table has not met; dropping it would answer a different question
  than the one asked, which is the silent fault this exists to prevent. The 400 names
  the field, so the client can remove it, and the table is the one place to add it
  once its meaning for the provider is known.

A null value counts as absent, as both APIs treat it. A refusal is a
``TranslationError`` naming the field (a 400 ``invalid_request_error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import Json, TranslationError

# No value of the field is a no-op: any value is refused.
NO_NOOP: Any = object()


@dataclass(frozen=True)
class FieldTable:
    provider: str  # for messages: "Anthropic", "Gemini", ...
    mapped: frozenset[str]
    ignored: Mapping[str, str]  # field -> why dropping it keeps the answer's meaning
    unsupported: Mapping[str, Any] = field(default_factory=dict)  # field -> no-op value, or NO_NOOP

    def __post_init__(self) -> None:
        overlap = (self.mapped & set(self.ignored)) | (self.mapped & set(self.unsupported))
        overlap |= set(self.ignored) & set(self.unsupported)
        if overlap:
            raise ValueError(f"fields listed twice: {sorted(overlap)}")

    def check(self, req: Json) -> None:
        """Refuses the first field of ``req`` that this provider cannot carry."""
        for key, value in req.items():
            if value is None or key in self.mapped or key in self.ignored:
                continue
            if key in self.unsupported:
                noop = self.unsupported[key]
                if noop is not NO_NOOP and _same(value, noop):
                    continue
                raise TranslationError(f"{key!r} is not supported by {self.provider}", key)
            raise TranslationError(
                f"unknown parameter {key!r}: the gateway does not know how {self.provider} "
                "would honour it, so it refuses it rather than drop it",
                key,
            )


def _same(value: Any, noop: Any) -> bool:
    # True == 1 and False == 0 in Python: a boolean no-op only matches a boolean.
    if isinstance(noop, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(noop, bool) and value == noop
    return bool(value == noop)


# ---------------------------------------------------------------- shared reasons

# chat.completions fields whose loss never changes what the model answers, for any provider.
CHAT_IGNORED: dict[str, str] = {
    "stream_options": "usage is the gateway's to ask for (include_usage shapes our own stream); "
    "include_obfuscation only pads chunks",
    "store": "OpenAI keeps the completion for its dashboard; no effect on the answer",
    "metadata": "tags for OpenAI's stored completions (used with store); no effect on the answer",
    "service_tier": "OpenAI's capacity tier: latency and price, not the answer",
    "prompt_cache_key": "a prompt-cache routing hint: cost, not the answer",
    "prompt_cache_retention": "how long OpenAI keeps the prompt cache: cost, not the answer",
    "prompt_cache_options": "OpenAI's cache breakpoints: cost, not the answer",
    "safety_identifier": "OpenAI's abuse-monitoring id for the end user; no effect on the answer",
}

# chat.completions fields only OpenAI's API answers, refused everywhere else unless at their no-op value.
CHAT_OPENAI_ONLY: dict[str, Any] = {
    "logprobs": False,
    "top_logprobs": 0,
    "logit_bias": {},
    "modalities": ["text"],
    "audio": NO_NOOP,
    "prediction": NO_NOOP,
    "web_search_options": NO_NOOP,
    "verbosity": NO_NOOP,
    "moderation": NO_NOOP,
    "functions": NO_NOOP,  # the deprecated function calling: send tools instead
    "function_call": NO_NOOP,
}

# The same for Anthropic Messages fields, towards providers other than Anthropic.
MESSAGES_IGNORED: dict[str, str] = {
    "service_tier": "Anthropic's capacity tier (auto, standard_only): availability, not the answer",
    "speed": "Anthropic's fast mode: latency and price, not the answer",
    "cache_control": "automatic prompt caching: cost, not the answer",
    "diagnostics": "asks Anthropic to explain cache misses in the response; the answer is the same",
    # Claude Code sends it. The edits only trim what the model sees to save context (old
    # tool results, thinking); the provider gets the whole history instead, and thinking
    # blocks do not reach other providers anyway.
    "context_management": "server-side context editing that only trims the history to save context",
}
