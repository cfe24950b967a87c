"""Ending a client's stream with an error, in its stream format, after the 200 has gone out.

Shared by whatever ends a stream early: the router phase (the provider stalled, the stream reached
its maximum), and response stages (a guardrail that stops an answer). The bytes are whole SSE
events, so they may follow any whole event the client already has:

- OpenAI chat completions: ``data: {"error": {...}}`` then ``data: [DONE]``. ``[DONE]`` follows an
  in-band error on every OpenAI-format stream the gateway sends, passthrough or translated, so a
  client reading until ``[DONE]`` knows the stream ended on purpose (the OpenAI SDKs raise at the
  error event either way).
- Anthropic Messages: ``event: error`` with ``{"type": "error", "error": {...}}``; nothing follows
  it, as on Anthropic's own streams.

A router-phase reply carrying these bytes should also end the stream (``Reply.end_of_stream``),
so Envoy finishes the client's body and lets go of the provider.
"""

from __future__ import annotations

from extproc.translate.messages_common import error_event
from extproc.translate.sse import DONE, error_frame

# Anthropic's error types for what the gateway ends streams for (its docs' list).
ANTHROPIC_TIMEOUT = "timeout_error"
ANTHROPIC_API = "api_error"


def stream_error(api: str, message: str, code: str, anthropic_type: str = ANTHROPIC_API) -> bytes:
    """The events that end ``api``'s stream with an error: ``code`` is OpenAI's ``error.code``,
    ``anthropic_type`` the Anthropic error type (Anthropic's errors carry no code)."""
    if api == "messages":
        return error_event(anthropic_type, message)
    return error_frame(message, "server_error", code) + DONE


_TERMINALS = {
    "messages": (b"event: message_stop", b"event:message_stop", b"event: error", b"event:error"),
}
_OPENAI_TERMINALS = (b"data: [DONE]", b"data:[DONE]")


def has_ending(api: str, out: bytes) -> bool:
    """Whether bytes sent to the client carry their stream's last event (so nothing may follow)."""
    return any(t in out for t in _TERMINALS.get(api, _OPENAI_TERMINALS))
