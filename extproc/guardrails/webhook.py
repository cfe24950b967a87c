"""The webhook guard: agentgateway's guardrail webhook contract, so its guardrail services work as-is.

- ``POST {target}/request`` with ``{"body": {"messages": [{"role", "content"}, ...]}}`` (one
  message per text of the guard's scope), or ``POST {target}/response`` with
  ``{"body": {"choices": [{"message": {"role": "assistant", "content"}}, ...]}}``.
- Headers: the client's headers that ``forwardHeaderMatches`` match, then the CEL ``headers``
  (over ``request``, ``jwt``, ``llmRequest``); ``:path``, ``:method`` and ``:authority`` set the
  webhook request's path, method and host.
- The reply is ``{"action": ...}``, read as agentgateway reads it, in order: Mask (``body`` with
  ``messages`` or ``choices``: their contents replace the texts, in order), Reject (``body``
  text and ``status_code``), and anything else is Pass.
- No answer in ``timeout``, an HTTP error or an unreadable reply: ``failureMode`` decides,
  ``failClosed`` (the default: 503) or ``failOpen`` (the request goes on, recorded as such).
- A streamed answer goes to ``/response`` in overlapping windows (``streamBatch``,
  ``streamOverlap``: extproc/guardrails/overlap.py), so a phrase split between two calls is seen whole.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import cel

from extproc.config.base import parse_duration
from extproc.config.guardrails import GuardSpec
from extproc.config.guardrails import Webhook as WebhookConfig
from extproc.guardrails.base import (
    ALLOW,
    FAIL_OPEN,
    MASK,
    REJECT,
    Guard,
    TextItem,
    Verdict,
    unavailable,
)
from extproc.guardrails.http import GuardCallError, call_timeout, post_json

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.guardrails")


class InvalidReply(Exception):
    pass


def _reason(action: dict[str, Any]) -> str | None:
    reason = action.get("reason")
    return reason[:200] if isinstance(reason, str) else None


def read_reply(phase: str, reply: Any, count: int) -> Verdict:
    """The webhook's answer as a verdict (InvalidReply: not one agentgateway would accept)."""
    if not isinstance(reply, dict) or not isinstance(reply.get("action"), dict):
        raise InvalidReply("the reply has no action object")
    action = reply["action"]
    body = action.get("body")
    if isinstance(body, dict) and (
        isinstance(body.get("messages"), list) or isinstance(body.get("choices"), list)
    ):
        key = "messages" if phase == "request" else "choices"
        items = body.get(key)
        if not isinstance(items, list):
            raise InvalidReply(f"a mask on the {phase} must carry body.{key}")
        texts = [_content(item, phase) for item in items]
        if len(texts) != count:
            raise InvalidReply(f"the mask has {len(texts)} {key} for the {count} sent")
        return Verdict(MASK, texts, reason=_reason(action))
    status = action.get("status_code")
    if (
        isinstance(body, str)
        and isinstance(status, int)
        and not isinstance(status, bool)
        and 0 <= status <= 65535
    ):
        return Verdict(
            REJECT, status=status if 400 <= status <= 599 else 403, message=body, reason=_reason(action)
        )
    return Verdict(ALLOW, reason=_reason(action))


def _content(item: Any, phase: str) -> str | None:
    message = item.get("message") if phase == "response" and isinstance(item, dict) else item
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise InvalidReply("a masked message has no content text")
    return message["content"]  # type: ignore[no-any-return]


class WebhookGuard(Guard):
    kind = "webhook"

    def __init__(self, spec: GuardSpec) -> None:
        super().__init__(spec)
        config: WebhookConfig = spec.config
        self.config = config
        host = config.target.host
        self.base = host.rstrip("/") if host.startswith(("http://", "https://")) else f"http://{host}"
        self.timeout = call_timeout(
            None if config.timeout is None else parse_duration(config.timeout), f"webhook {self.base}"
        )
        self.fail_open = config.failure_mode == "failOpen"
        self.matches = [
            (m.name, m.value, re.compile(m.value.regex) if m.value and m.value.regex else None)
            for m in config.forward_header_matches
        ]
        self.programs = {name.lower(): cel.compile(expr) for name, expr in config.headers.items()}

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        if phase == "request":
            body: dict[str, Any] = {"messages": [{"role": i.role, "content": i.text} for i in items]}
        else:
            body = {"choices": [{"message": {"role": "assistant", "content": i.text}} for i in items]}
        headers = self._forwarded(ex)
        path = f"/{phase}"
        for name, value in self._computed(ex).items():
            if name == ":path":
                path = value if value.startswith("/") else "/" + value
            elif name == ":authority":
                headers["host"] = value
            elif name != ":method":  # POST is what the contract defines; other methods are not sent
                headers[name] = value
        try:
            status, reply = await post_json(self.base + path, {"body": body}, headers, self.timeout)
            if not 200 <= status < 300:
                raise GuardCallError(f"the webhook answered HTTP {status}")
            verdict = read_reply(phase, reply, len(items))
        except (GuardCallError, InvalidReply) as exc:
            return self._failed(str(exc))
        if verdict.action == REJECT:
            verdict.headers = {}
        return verdict

    def _failed(self, why: str) -> Verdict:
        if self.fail_open:
            log.warning("webhook guardrail %s failed (%s): failing open", self.base, why)
            return Verdict(FAIL_OPEN, reason=why)
        log.warning("webhook guardrail %s failed (%s): failing closed", self.base, why)
        return unavailable("webhook", why)

    def _forwarded(self, ex: Exchange) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value, regex in self.matches:
            have = ex.headers.get(name)
            if have is None or name.startswith(":"):
                continue
            if value is not None:
                ok = regex.fullmatch(have) is not None if regex is not None else have == value.exact
                if not ok:
                    continue
            out[name] = have
        return out

    def _computed(self, ex: Exchange) -> dict[str, str]:
        if not self.programs:
            return {}
        ctx = cel.Context(
            {
                "request": {
                    "method": ex.method,
                    "path": ex.path,
                    "host": ex.headers.get(":authority", ""),
                    "headers": {k: v for k, v in ex.headers.items() if not k.startswith(":")},
                },
                "jwt": ex.identity.get("jwt") or {},
                "llmRequest": ex.llm.body if ex.llm is not None else {},
            }
        )
        out: dict[str, str] = {}
        for name, program in self.programs.items():
            try:
                value = program.execute(ctx)
            except Exception:  # a missing key: the header is left out, as agentgateway does
                continue
            if value is None:
                continue
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out
