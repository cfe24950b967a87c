"""A small rate limit service speaking Envoy's RLS v3 protocol, for remoteRateLimit tests.

It counts as envoyproxy/ratelimit does with its defaults (src/redis/fixed_cache_impl.go): fixed
windows aligned to the unit, every request's hits added (an over-limit request counts too),
``OVER_LIMIT`` when the count after adding passes the limit, ``limit_remaining`` what is left
and ``duration_until_reset`` the rest of the window. A descriptor's own ``hits_addend`` wins over
the request's, whose 0 means 1. Limits are given per descriptor as a tuple of (key, value)
entries, ``"*"`` matching any value. Every request is recorded for the tests to read; ``delay``
makes it slow, and it can run in a thread of its own (``start_in_thread``) for end-to-end tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from extproc.ports import free_port


@dataclass
class Seen:
    domain: str
    hits_addend: int
    descriptors: list[tuple[tuple[tuple[str, str], ...], int | None]]  # entries, descriptor hits


@dataclass
class RlsServer(rls_pb2_grpc.RateLimitServiceServicer):
    limits: dict[tuple[tuple[str, str], ...], int]  # per minute
    domain: str = "llm"
    port: int = field(default_factory=free_port)
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    _server: grpc.aio.Server | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def _limit_for(self, entries: tuple[tuple[str, str], ...]) -> int | None:
        for pattern, limit in self.limits.items():
            if len(pattern) == len(entries) and all(
                pk == k and pv in ("*", v) for (pk, pv), (k, v) in zip(pattern, entries, strict=True)
            ):
                return limit
        return None

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        descs = []
        resp = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        now = int(time.time())
        for d in request.descriptors:
            entries = tuple((e.key, e.value) for e in d.entries)
            own = d.hits_addend.value if d.HasField("hits_addend") else None
            descs.append((entries, own))
            hits = own if own is not None else max(1, request.hits_addend)
            status = resp.statuses.add(code=rls_pb2.RateLimitResponse.OK)
            limit = self._limit_for(entries) if request.domain == self.domain else None
            if limit is None:
                continue
            start = now // 60 * 60
            key = f"{request.domain}_{entries}_{start}"
            after = self.counts.get(key, 0) + hits
            self.counts[key] = after
            status.current_limit.requests_per_unit = limit
            status.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.MINUTE
            status.duration_until_reset.seconds = 60 - now % 60
            if after > limit:
                status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
                resp.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
            else:
                status.limit_remaining = limit - after
        self.seen.append(Seen(request.domain, request.hits_addend, descs))
        resp.response_headers_to_add.add(key="x-rls-served", value="1")
        return resp

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> RlsServer:
        self._server = grpc.aio.server()
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(self.host)
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None

    def start_in_thread(self) -> RlsServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True, name="rls").start()
        if not ready.wait(10):
            raise TimeoutError("the RLS server did not start")
        return self

    def stop_thread(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._loop = None
