"""One client request, from its headers to its last byte: what every stage reads and writes."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc import tokens

if TYPE_CHECKING:
    from extproc.gateway import ResolvedRoute, Upstream
    from extproc.pipeline.llm_request import LLMRequest
    from extproc.telemetry.tracing import Trace
    from extproc.translate.usage import Usage


# Random bytes for request ids, drawn from the OS 4 KiB at a time: os.urandom releases the GIL,
# so one call per request let the writer and gRPC poller threads in mid-request every time.
_POOL_BYTES = 4096
_pool = b""
_taken = 0
_pool_lock = threading.Lock()  # the rejected-request log and the router phase may share it


def new_request_id() -> str:
    """A gateway-made id: 128 random bits, hex. The client's x-request-id is never trusted as the id.

    Each id is 16 bytes of the OS's CSPRNG never handed out before (the pool is dropped in a
    forked child, which would otherwise repeat its parent's ids)."""
    global _pool, _taken
    with _pool_lock:
        start = _taken
        if start + 16 > len(_pool):
            _pool, start = os.urandom(_POOL_BYTES), 0
        _taken = start + 16
        pool = _pool
    return pool[start : start + 16].hex()


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


@dataclass
class AttemptRecord:
    """One try at a provider. Failed attempts are known only as far as Envoy reports them."""

    number: int
    provider: str  # provider name(s) from the config; a group's names joined with "|" when Envoy does not say
    outcome: str  # "answered" or "retried"
    status: int | None = None


@dataclass
class Exchange:
    """Owned by the router-phase stream. What the upstream phase needs travels in dynamic metadata."""

    request_id: str
    route: ResolvedRoute
    api: str  # completions, messages, embeddings, models, passthrough
    method: str
    path: str  # the client's path, before urlRewrite
    client_request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # the client's request headers
    llm: LLMRequest | None = None  # the parsed request, for the LLM APIs
    identity: dict[str, Any] = field(default_factory=dict)  # authz's, flattened (pipeline/identity.py)
    upstream: Upstream | None = None  # the provider that answered (or was to answer)
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None
    response_model: str | None = None
    status: int = 0
    outcome: str = (
        "pending"  # ok, provider_error, gateway_error, envoy_error, client_disconnected, stream_cut
    )
    error: str | None = None  # what went wrong, for the record (never a secret)
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    first_byte: float | None = None  # the provider's response headers reached the gateway
    first_token: float | None = None  # the first response body bytes reached the client
    ended: float | None = None
    completed: bool = False
    # Headers stages add to the answer the client gets (the x-ratelimit headers of a passing request).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Guardrail decisions, in order: {phase, guard, action, matched?, reason?} (extproc/guardrails).
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    # The budget stage's decision, for the log line and metrics: {decision, budgets, reserved_usd,
    # charged_usd}; None when no budget applied.
    budget: dict[str, Any] | None = None
    # A stage's per-request state, by stage name (stages themselves are shared by a route's requests).
    stage_state: dict[str, Any] = field(default_factory=dict)
    trace: Trace | None = None  # its place in a trace, when tracing is on (pipeline/trace_context.py)
    _estimate: int | None = None

    @property
    def request_model(self) -> str | None:
        return self.llm.model if self.llm is not None else None

    def estimated_tokens(self) -> int | None:
        """Prompt plus the most the answer may use, before the call (limits that reserve read it).

        Computed on first use only: tokenizing costs tens of microseconds per thousand tokens.
        """
        if self._estimate is None and self.llm is not None:
            model = (
                self.llm.model
                or (self.route.direct_upstream.model if self.route.direct_upstream else "")
                or ""
            )
            self._estimate = tokens.estimate_request_tokens(self.api, self.llm.body, model)
        return self._estimate

    def elapsed_ms(self, at: float | None) -> float | None:
        return None if at is None else round((at - self.started) * 1000, 3)
