"""The route's ``ai`` policy, in agentgateway's shape: request shaping for LLM calls.

``defaults`` are set only where the client left a field out, ``overrides`` always
win, ``prompts`` add messages before and after the client's, and ``modelAliases``
rename the requested model (``*`` wildcards; the longest pattern wins).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from extproc.config.guardrails import PromptGuard

RouteType = Literal["completions", "messages", "models", "embeddings", "passthrough"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class PromptMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class Prompts(_Strict):
    prepend: list[PromptMessage] = []
    append: list[PromptMessage] = []


# Fields the gateway itself decides: a default or override of these would break routing.
_RESERVED = frozenset({"messages", "stream"})


class AIPolicy(_Strict):
    defaults: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    prompts: Prompts | None = None
    model_aliases: dict[str, str] = Field({}, alias="modelAliases")
    routes: dict[str, RouteType] | None = None
    # Client headers that may reach this route's providers besides each provider's own allowlist:
    # exact names, or a prefix ending in ``*`` (``x-tenant-*``). Credentials are never forwarded.
    forward_headers: list[str] = Field([], alias="forwardHeaders")
    # Guardrails on the request and the answer (extproc/config/guardrails.py).
    prompt_guard: PromptGuard | None = Field(None, alias="promptGuard")

    @field_validator("defaults", "overrides")
    @classmethod
    def _not_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(_RESERVED & v.keys())
        if bad:
            raise ValueError(f"{', '.join(bad)} cannot be set by the gateway; use prompts for messages")
        return v

    @field_validator("forward_headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            low = name.strip().lower()
            if not low or "*" in low[:-1] or low.startswith(":"):
                raise ValueError(f"{name!r}: use a header name, or a prefix ending in '*'")
            out.append(low)
        return out

    @field_validator("model_aliases")
    @classmethod
    def _one_star(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern, target in v.items():
            if not pattern or not target:
                raise ValueError("a model alias needs a pattern and a target model")
        return v
