"""The OpenAI moderation guard (request side): flagged input is rejected with the guard's rejection.

``POST {baseUrl}/v1/moderations`` with ``{"model", "input": [texts]}`` and the key as a bearer
token: from ``auth.key`` (the seed's shape: a literal, ``$ENV_VAR`` or ``{file: path}``), or
``policies.backendAuth.key`` (agentgateway's), else ``$OPENAI_API_KEY``. An answer that cannot
be had fails closed (503), as agentgateway's does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extproc.config.base import parse_duration
from extproc.config.guardrails import GuardSpec, KeyFile, OpenAIModeration
from extproc.gateway import resolve_secret
from extproc.guardrails.base import ALLOW, Guard, StreamFilter, TextItem, Verdict, rejected, unavailable
from extproc.guardrails.http import GuardCallError, call_timeout, post_json

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.guardrails")


def flagged_categories(reply: Any) -> list[str] | None:
    """The categories flagged in any result; None when the reply is not a moderation object."""
    results = reply.get("results") if isinstance(reply, dict) else None
    if not isinstance(results, list):
        return None
    out: list[str] = []
    for result in results:
        if not isinstance(result, dict) or not result.get("flagged"):
            continue
        categories = result.get("categories")
        names = [k for k, v in categories.items() if v is True] if isinstance(categories, dict) else []
        out += [n for n in names or ["flagged"] if n not in out]
    return out


class ModerationGuard(Guard):
    kind = "openAIModeration"

    def __init__(self, spec: GuardSpec) -> None:
        super().__init__(spec)
        config: OpenAIModeration = spec.config
        self.config = config
        self.url = config.base_url.rstrip("/") + "/v1/moderations"
        self.timeout = call_timeout(
            None if config.timeout is None else parse_duration(config.timeout), "openAIModeration"
        )
        self._key: str | None = None

    def key(self) -> str | None:
        """Read once: a key file is read at the first request, not at every one."""
        if self._key is not None:
            return self._key
        configured = self.config.key
        if isinstance(configured, KeyFile):
            try:
                self._key = Path(configured.file).read_text().strip() or None
            except OSError as exc:
                log.error("openAIModeration: cannot read the key file %s: %s", configured.file, exc.strerror)
                return None
        elif configured is not None:
            self._key = resolve_secret(configured)[0]
        else:
            self._key = os.environ.get("OPENAI_API_KEY") or None
        return self._key

    def stream(self, ex: Exchange) -> StreamFilter:
        raise TypeError("openAIModeration checks requests only")

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        key = self.key()
        headers = {"authorization": f"Bearer {key}"} if key else {}
        body = {"model": self.config.model, "input": [i.text for i in items]}
        try:
            status, reply = await post_json(self.url, body, headers, self.timeout)
        except GuardCallError as exc:
            return unavailable("openAIModeration", str(exc))
        if status != 200:
            return unavailable("openAIModeration", f"the moderation API answered HTTP {status}")
        categories = flagged_categories(reply)
        if categories is None:
            return unavailable("openAIModeration", "the answer is not a moderation object")
        if categories:
            return rejected(self.spec.rejection, reason="flagged", matched=categories)
        return Verdict(ALLOW)
