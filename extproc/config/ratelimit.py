"""Rate limit policies: agentgateway's ``localRateLimit`` and ``remoteRateLimit``, this project's
``rateLimits`` (a policy file in envoyproxy/ratelimit's format) and the store they count in.

What each one means at run time is in extproc/limits/ (README "Rate limits").
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from extproc.config.base import CheckedDuration, Duration, Strict, parse_duration

FailureMode = Literal["failClosed", "failOpen"]


class LocalRateLimit(Strict):
    """One token bucket (agentgateway's shape): ``maxTokens`` is its size and its start,
    ``tokensPerFill`` come back every ``fillInterval``. ``type: requests`` (the default) costs one
    token a request; ``type: tokens`` one token per LLM token (prompt and completion)."""

    max_tokens: int = Field(alias="maxTokens", ge=1)
    tokens_per_fill: int = Field(1, alias="tokensPerFill", ge=1)
    fill_interval: Duration = Field(alias="fillInterval")
    type: Literal["requests", "tokens"] = "requests"

    @field_validator("fill_interval")
    @classmethod
    def _interval(cls, v: Duration) -> Duration:
        # Envoy's own filter refuses shorter intervals (too aggressive refills); the stage agrees.
        if parse_duration(v) < 0.05:
            raise ValueError("fillInterval must be at least 50ms")
        return v

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.fill_interval)

    @property
    def rate(self) -> float:
        """Tokens per second: the bucket refills continuously, as Envoy's token bucket does."""
        return self.tokens_per_fill / self.interval_seconds


class RateLimitsPolicy(Strict):
    """``rateLimits``: per-identity limits from a policy file in envoyproxy/ratelimit's format."""

    # Relative to the config file's folder (policies/ in this repository); reloaded while running.
    file: str
    # The file's ``domain``; when set it must agree (a safety check against the wrong file).
    domain: str | None = None
    failure_mode: FailureMode | None = Field(None, alias="failureMode")  # None: the store's


class BudgetsPolicy(Strict):
    """``budgets``: dollar budgets per API key, user and group from a policy file
    (extproc/limits/budget_file.py). Every route naming the same file shares its counters."""

    # Relative to the config file's folder (policies/budgets.yaml here); reloaded while running.
    file: str
    failure_mode: FailureMode | None = Field(None, alias="failureMode")  # None: the store's


class DescriptorEntry(Strict):
    key: str = Field(min_length=1)
    # A CEL expression (agentgateway's): ``jwt.sub``, ``llm.requestModel``, ``'"static"'``.
    value: str = Field(min_length=1)


class RemoteDescriptor(Strict):
    entries: list[DescriptorEntry] = Field(min_length=1)
    type: Literal["requests", "tokens"] = "requests"


_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d+$")


class RemoteRateLimit(Strict):
    """``remoteRateLimit`` (agentgateway's shape): descriptors sent to a rate limit service over
    Envoy's RLS v3 protocol (envoyproxy/ratelimit, or any server that speaks it)."""

    host: str
    domain: str = Field(min_length=1)
    descriptors: list[RemoteDescriptor] = Field(min_length=1)
    failure_mode: FailureMode = Field("failClosed", alias="failureMode")
    timeout: CheckedDuration = "100ms"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _HOSTPORT.match(v):
            raise ValueError("host must be host:port")
        return v

    @model_validator(mode="after")
    def _cel(self) -> RemoteRateLimit:
        from extproc.limits.values import compile_value  # the config check compiles every value

        for d in self.descriptors:
            for e in d.entries:
                compile_value(e.value)
        return self


class RedisStore(Strict):
    url: str = Field(pattern=r"^(redis|rediss|unix)://")
    key_prefix: str = Field("llmgw:", alias="keyPrefix")
    # Per command; a Redis that does not answer within it is "unreachable" (failureMode).
    timeout: CheckedDuration = "250ms"


class RateLimitStore(Strict):
    """``config.rateLimitStore``: where the stage's counters live. Without ``redis``, in the extproc
    process (one worker only: see README); with it, shared by every replica."""

    redis: RedisStore | None = None
    failure_mode: FailureMode = Field("failClosed", alias="failureMode")
