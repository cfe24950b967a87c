"""The one interface every policy implements, and what it may ask Envoy to show it.

A stage is built once per route (from that route's policies) and shared by all of
its requests, so it keeps no per-request state of its own: that lives on the
``Exchange``. A stage that asks a store or a service may split its request side: send the
question in ``on_request``, take the answer in ``decide``. Order on a route: request shaping
-> entitlements -> request guardrails -> limit and budget reservation -> [provider] ->
response guardrails -> settlement, usage record, metrics, ledger.
"""

from __future__ import annotations

import enum

from extproc.errors import GatewayError
from extproc.pipeline.exchange import Exchange


class Needs(enum.Flag):
    """What a stage must see; the processing modes Envoy is asked for are the union."""

    NONE = 0
    REQUEST_BODY = enum.auto()  # the parsed LLM request (on_request)
    RESPONSE_HEADERS = enum.auto()  # status and the answering provider, at least (on_complete)
    RESPONSE_BODY = enum.auto()  # a buffered answer, or every chunk of a stream (usage, guardrails)


class Denied(GatewayError):
    """Raised by ``on_request`` to answer the client at once (status, message, extra headers)."""


class Stage:
    """A policy on the request's way. Override what you need; the defaults do nothing."""

    name = "stage"
    needs = Needs.NONE
    # A stage with on_response_chunk may change the answer's bytes: the answer then goes out
    # decoded and without its content-length. False for one that only reads it (span notes).
    changes_answer = True

    async def on_request(self, ex: Exchange) -> None:
        """Before the provider is called. May rewrite ``ex.llm`` or raise ``Denied``."""

    async def decide(self, ex: Exchange) -> None:
        """After every stage's ``on_request``, before the egress work: the answer to a question
        ``on_request`` sent off without waiting for it (a limit store's reservation), so the
        router's own work overlaps the round trip (the rate limits' and the budgets' counters go
        in one store call). May raise ``Denied``. Not called when a stage refused first: then
        ``on_complete`` finds the question unanswered, and must undo what it took."""

    def on_response_chunk(self, ex: Exchange, data: bytes) -> bytes:
        """Each piece of the answer in the client's format (a whole body when not streamed)."""
        return data

    async def on_complete(self, ex: Exchange) -> None:
        """Always runs once: success, provider error, gateway error, client disconnect, cut stream.
        After a whole answer, once its last reply has gone to Envoy (the client does not wait)."""


async def request_side(stage: Stage, ex: Exchange) -> None:
    """A stage's whole request side, ``on_request`` then ``decide``, with nothing between
    (tests and benchmarks that drive one stage; the router runs every stage's ``on_request`` first,
    so a route's rate limits and budgets share one store call only there)."""
    await stage.on_request(ex)
    await stage.decide(ex)
