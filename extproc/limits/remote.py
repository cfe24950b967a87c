"""``remoteRateLimit``: a rate limit service over Envoy's RLS v3 protocol
(``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``), e.g. envoyproxy/ratelimit.

Before the call, one ShouldRateLimit per descriptor type: ``requests`` descriptors with
``hits_addend`` 1, ``tokens`` descriptors with the prompt's estimated tokens (also set on each
descriptor, for servers that read the per-descriptor ``hits_addend``). After the answer, the
tokens used beyond that estimate are sent as one more ShouldRateLimit (the amend), whose answer
is ignored. RLS hits are unsigned, so a counter cannot be given back: that is why a remote token
limit reserves only the prompt (known before the call), not the most the answer may use.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2

from extproc.config.base import parse_duration
from extproc.config.ratelimit import RemoteRateLimit
from extproc.limits import values
from extproc.limits.quota import Quota
from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.limits")

_UNIT_SECONDS = {1: 1, 2: 60, 3: 3600, 4: 86400, 5: 2592000, 6: 31536000, 7: 604800}
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


class RemoteUnavailable(Exception):
    """The rate limit service did not answer in time (or at all)."""


@dataclass
class RemoteAnswer:
    over: bool
    quotas: list[Quota]
    headers: dict[str, str]  # response_headers_to_add, for the client
    sent: list[tuple[tuple[tuple[str, str], ...], bool]]  # the descriptors sent, and tokens-typed?
    hits: int  # the tokens the tokens-typed descriptors were charged


class RemoteLimiter:
    def __init__(self, policy: RemoteRateLimit) -> None:
        self.policy = policy
        self.domain = policy.domain
        self.timeout = parse_duration(policy.timeout)
        self.fail_open = policy.failure_mode == "failOpen"
        self.descriptors = [
            ([(e.key, values.compile_value(e.value)) for e in d.entries], d.type == "tokens")
            for d in policy.descriptors
        ]
        self._channel: grpc.aio.Channel | None = None
        self._stub: rls_pb2_grpc.RateLimitServiceStub | None = None

    @property
    def has_tokens(self) -> bool:
        return any(tokens for _, tokens in self.descriptors)

    def _service(self) -> rls_pb2_grpc.RateLimitServiceStub:
        if self._stub is None:  # in the serving loop, on first use
            self._channel = grpc.aio.insecure_channel(self.policy.host)
            self._stub = rls_pb2_grpc.RateLimitServiceStub(self._channel)
        return self._stub

    def entries_for(self, ex: Exchange) -> list[tuple[tuple[tuple[str, str], ...], bool]]:
        """The descriptors this request sends; one whose value cannot be had is left out."""
        ctx = values.cel_context(ex)
        out = []
        for entries, tokens in self.descriptors:
            got = [(key, values.evaluate(program, ctx)) for key, program in entries]
            if all(v is not None for _, v in got):
                out.append((tuple((k, str(v)) for k, v in got), tokens))
        return out

    async def check(self, ex: Exchange, prompt_tokens: int) -> RemoteAnswer | None:
        sent = self.entries_for(ex)
        if not sent:
            return None
        hits = max(1, prompt_tokens)
        jobs = []
        for tokens, hit in ((False, 1), (True, hits)):
            group = [e for e, t in sent if t == tokens]
            if group:
                jobs.append(self._should(group, hit))
        answers = await asyncio.gather(*jobs)
        over = False
        quotas: list[Quota] = []
        extra: dict[str, str] = {}
        for resp, descs in answers:
            over = over or resp.overall_code == _OVER
            for status, entries in zip(resp.statuses, descs, strict=False):
                if status.HasField("current_limit"):
                    quotas.append(_quota(self.domain, entries, status))
            for h in resp.response_headers_to_add:
                extra[h.key.lower()] = h.value
        return RemoteAnswer(over, quotas, extra, sent, hits if any(t for _, t in sent) else 0)

    async def _should(
        self, entries: list[tuple[tuple[str, str], ...]], hits: int
    ) -> tuple[rls_pb2.RateLimitResponse, list[tuple[tuple[str, str], ...]]]:
        request = rls_pb2.RateLimitRequest(domain=self.domain, hits_addend=hits)
        for desc in entries:
            d = request.descriptors.add()
            d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
            for key, value in desc:
                d.entries.add(key=key, value=value)
        try:
            resp = await self._service().ShouldRateLimit(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RemoteUnavailable(f"{self.policy.host}: {exc.code().name}: {exc.details()}") from None
        return resp, entries

    async def amend(self, answer: RemoteAnswer, extra_tokens: int) -> None:
        """Charge the tokens used beyond the reservation to the tokens-typed descriptors."""
        entries = [e for e, tokens in answer.sent if tokens]
        if extra_tokens <= 0 or not entries:
            return
        try:
            await self._should(entries, extra_tokens)
        except RemoteUnavailable as exc:
            log.error("remoteRateLimit: amending %d tokens failed: %s", extra_tokens, exc)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _quota(
    domain: str, entries: tuple[tuple[str, str], ...], status: rls_pb2.RateLimitResponse.DescriptorStatus
) -> Quota:
    limit = status.current_limit
    what = ", ".join(f"{k}={v}" for k, v in entries)
    return Quota(
        what=f"remoteRateLimit {domain}: {what}",
        limit=limit.requests_per_unit,
        window=_UNIT_SECONDS.get(limit.unit, 0),
        bucket=False,
        remaining=status.limit_remaining,
        reset=status.duration_until_reset.seconds + status.duration_until_reset.nanos / 1e9,
        fits=status.code != _OVER,
        retry_after=(status.duration_until_reset.seconds or 1) if status.code == _OVER else 0.0,
    )
