"""When an exchange's stages run ``on_complete``: once, at its end, or after the answer has gone.

The gRPC server sets ``after_reply``: an answer that ended well then completes once its last
reply has gone to Envoy (the server calls ``run`` after each reply), so the client's last bytes
never wait for settling, the usage record, metrics, the log line or spans. Every other end
(an error, a cut stream, a deadline) completes at once, as does everything for callers that
drive the router's phases directly (tests, benches). ``run`` at the stream's end covers a stream
that closed before the server got to it.
"""

from __future__ import annotations

import logging

from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Stage

log = logging.getLogger("gateway.router")


class Completion:
    def __init__(self) -> None:
        self.after_reply = False
        self._due: tuple[Exchange, list[Stage]] | None = None  # ended, not yet completed

    async def end(self, ex: Exchange, stages: list[Stage], answered: bool = False) -> None:
        """The exchange ended; its stages complete now, or (``answered``) after the reply."""
        self._due = (ex, stages)
        if not (answered and self.after_reply):
            await self.run()

    async def run(self) -> None:
        """Every stage's ``on_complete``, if an exchange's are due."""
        if self._due is None:
            return
        (ex, stages), self._due = self._due, None
        for stage in stages:
            try:
                await stage.on_complete(ex)
            except Exception:  # one stage's failure must not skip the others
                log.exception("stage %s failed in on_complete (request %s)", stage.name, ex.request_id)
