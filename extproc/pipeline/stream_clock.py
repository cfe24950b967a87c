"""A stream's deadlines (README "Stream timeouts"): until the provider's headers, the request
timeout; after them, silence between chunks (``streamIdleTimeout``) and the whole length
(``streamMaxDuration``). The router phase asks when the next one is due and, when it passes,
which one it was."""

from __future__ import annotations

import time
from dataclasses import dataclass

from extproc.gateway import Gateway, ResolvedRoute


@dataclass
class StreamClock:
    request: float = 0.0
    idle: float = 0.0
    most: float = 0.0
    sent_at: float | None = None  # None: not a stream, no deadline of ours
    last_chunk: float = 0.0

    def start(self, route: ResolvedRoute, gw: Gateway) -> int:
        """Start timing a stream sent on now; the route timeout Envoy should use, in ms: a backstop,
        a sidecar timeout past the maximum (the gateway ends the stream itself before that)."""
        self.idle, self.most = route.stream_limits(gw)
        self.request = route.timeout_seconds(gw.request_timeout)
        self.sent_at = time.monotonic()
        return int((self.most + gw.sidecar_timeout) * 1000)

    def due(self, started: float, first_byte: float | None, streaming: bool) -> float | None:
        """When the stream must have moved on (monotonic seconds), or None."""
        if self.sent_at is None:
            return None
        if first_byte is None or not streaming:
            return self.sent_at + self.request  # no answer yet, or one that is not a stream
        return min(self.last_chunk + self.idle, started + self.most)

    def expired(self, started: float) -> tuple[str, str]:
        """Which deadline passed once the stream had begun: its code and a message for the client.
        Told by which deadline comes first, not by the clock now: a loop may fire a timer a tick
        early, and a stream cut at its maximum would then read as idle."""
        if started + self.most <= self.last_chunk + self.idle:
            return (
                "stream_max_duration",
                f"the stream reached the gateway's maximum stream duration ({self.most:g}s) and was ended",
            )
        return (
            "stream_idle_timeout",
            f"the provider sent nothing for {self.idle:g}s, so the gateway ended the stream",
        )
