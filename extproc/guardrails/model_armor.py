"""The Google Model Armor guard: a template's ``sanitizeUserPrompt`` on requests, ``sanitizeModelResponse``
on answers, through Google's own client (``google-cloud-modelarmor``, its asyncio gRPC transport).

- One call per text (each message of the guard's scope, each choice of an answer), concurrently
  but at most ``MAX_CALLS`` at once per check (a long conversation does not fan out unbounded):
  a de-identified text then replaces exactly the text it came from.
- A filter that matched (``filterMatchState`` MATCH_FOUND) rejects with the guard's rejection; the
  message names the filters (``rai:dangerous``, ``pi_and_jailbreak``, ``sdp``, ...). The one
  exception is a template that de-identifies: when Sensitive Data Protection is the only filter
  that matched and it returned the de-identified text, that text replaces the original (mask).
- ``invocationResult`` FAILURE (no filter could run), an RPC error, no answer within ``timeout``
  or no credentials: ``failureMode`` decides, failClosed (503) by default. PARTIAL (some filters
  skipped, e.g. for a language) is decided on the filters that ran, and recorded as the reason.
- Streamed answers are checked in overlapping windows of ``streamBatch`` characters, each one's
  last ``streamOverlap`` characters or more checked again with the next (extproc/guardrails/overlap.py,
  every remote guard's), so a phrase or an address that falls across two calls is seen whole.

Credentials: Application Default Credentials (or ``credentials.file``) through extproc/gcp_auth.py,
whose token cache Vertex shares: tokens are fetched in a worker thread and renewed ahead of
expiry, and each call carries the current one. A plaintext endpoint (a local test server) never
gets one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from extproc import gcp_auth
from extproc.config.base import parse_duration
from extproc.config.guardrails import GuardSpec
from extproc.config.model_armor import CredentialsFile, GoogleModelArmor
from extproc.guardrails.base import (
    ALLOW,
    FAIL_OPEN,
    MASK,
    Guard,
    TextItem,
    Verdict,
    rejected,
    unavailable,
)
from extproc.guardrails.http import call_timeout

if TYPE_CHECKING:
    from google.cloud import modelarmor_v1

    from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.guardrails")

KIND = "googleModelArmor"
MAX_CALLS = 8  # sanitize calls in flight for one check (one request's texts, or one answer's choices)
# What a rejected text becomes in the logged prompt when SDP found sensitive data in it but gave
# no de-identified text: a log line never shows it.
SENSITIVE = "<SENSITIVE_DATA>"


@dataclass
class Reading:
    """What one sanitization result says about one text."""

    matched: list[str] = field(default_factory=list)  # filter names, never the text
    masked: str | None = None  # SDP's de-identified text
    sdp: bool = False  # SDP matched (the text holds sensitive data)
    failed: bool = False  # invocationResult FAILURE: no filter ran
    partial: bool = False

    @property
    def blocks(self) -> bool:
        """A match that a de-identified text does not answer."""
        return bool(self.matched) and (self.masked is None or self.matched != ["sdp"])


def read_result(result: modelarmor_v1.SanitizationResult) -> Reading:
    from google.cloud import modelarmor_v1 as ma

    found = ma.FilterMatchState.MATCH_FOUND
    out = Reading(
        failed=result.invocation_result == ma.InvocationResult.FAILURE,
        partial=result.invocation_result == ma.InvocationResult.PARTIAL,
    )
    for key, entry in sorted(result.filter_results.items()):  # a map: its order is not the API's
        which = ma.FilterResult.pb(entry).WhichOneof("filter_result")
        if which is None:
            continue
        name = key or which.removesuffix("_filter_result")
        if which == "sdp_filter_result":
            sdp = entry.sdp_filter_result
            kind = ma.SdpFilterResult.pb(sdp).WhichOneof("result")
            part = getattr(sdp, kind) if kind is not None else None
            if part is None or part.match_state != found:
                continue
            out.sdp = True
            out.matched.append(name)
            if kind == "deidentify_result" and "text" in part.data:
                out.masked = part.data.text
            continue
        filtered = getattr(entry, which)
        if filtered.match_state != found:
            continue
        out.matched.append(name)
        if which == "rai_filter_result":
            out.matched += [
                f"{name}:{sub or ma.RaiFilterType(t.filter_type).name.lower()}"
                for sub, t in sorted(filtered.rai_filter_type_results.items())
                if t.match_state == found
            ]
    if result.filter_match_state == found and not out.matched:
        out.matched.append("unknown")  # the overall state says a filter matched: take its word
    return out


def decide(readings: list[Reading], spec: GuardSpec, fail_open: bool) -> Verdict:
    """The verdict on one phase's texts from their readings, in order."""
    names: list[str] = []
    for r in readings:
        names += [n for n in r.matched if n not in names]
    if any(r.blocks for r in readings):
        verdict = rejected(spec.rejection, reason="match", matched=names)
        verdict.message = f"{spec.rejection.body} (Google Model Armor: {', '.join(names)})"
        texts = [r.masked if r.masked is not None else (SENSITIVE if r.sdp else None) for r in readings]
        verdict.texts = texts if any(t is not None for t in texts) else None
        return verdict
    if any(r.failed for r in readings):
        return failed("Model Armor ran none of the template's filters", fail_open)
    partial = "partial" if any(r.partial for r in readings) else None
    if any(r.masked is not None for r in readings):
        return Verdict(MASK, [r.masked for r in readings], reason=partial or "deidentified", matched=names)
    return Verdict(ALLOW, reason=partial)


def failed(why: str, fail_open: bool) -> Verdict:
    if fail_open:
        log.warning("googleModelArmor guardrail failed (%s): failing open", why)
        return Verdict(FAIL_OPEN, reason=why)
    log.warning("googleModelArmor guardrail failed (%s): failing closed", why)
    return unavailable(KIND, why)


# One token source per credentials file, shared by the guards that name it (ADC: gcp_auth's own).
_TOKENS: dict[str, gcp_auth.GoogleTokens] = {}


def tokens_for(credentials: CredentialsFile | None) -> gcp_auth.GoogleTokens:
    if credentials is None:
        return gcp_auth.DEFAULT
    path = credentials.file

    def load() -> Any:
        import google.auth

        loaded, _ = google.auth.load_credentials_from_file(path, scopes=gcp_auth.SCOPES)
        return loaded

    return _TOKENS.setdefault(path, gcp_auth.GoogleTokens(load))


class ModelArmorGuard(Guard):
    kind = KIND

    def __init__(self, spec: GuardSpec) -> None:
        super().__init__(spec)
        config: GoogleModelArmor = spec.config
        self.config = config
        self.endpoint = config.target
        self.timeout = call_timeout(
            None if config.timeout is None else parse_duration(config.timeout), f"{KIND} {config.template}"
        )
        self.fail_open = config.failure_mode == "failOpen"
        self.tokens = None if self.endpoint.plaintext else tokens_for(config.credentials)
        ignored = config.ignored_policies()
        if ignored:
            log.warning(
                "googleModelArmor %s: policies %s not applied: this gateway calls Model Armor through "
                "Google's client, with Application Default Credentials (or credentials.file) over TLS",
                config.template,
                ", ".join(ignored),
            )
        # The client's modules take most of a second to import: here, at startup, not on the event
        # loop inside the first request's timeout (the later imports in this module are lookups).
        import google.api_core.exceptions
        import google.cloud.modelarmor_v1.services.model_armor.transports  # noqa: F401

        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Any:
        """The client, made in the running loop on first use (a gRPC aio channel belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import grpc
            from google.cloud import modelarmor_v1 as ma
            from google.cloud.modelarmor_v1.services.model_armor.transports import (
                ModelArmorGrpcAsyncIOTransport,
            )

            target = self.endpoint.target
            if self.endpoint.plaintext:
                channel = grpc.aio.insecure_channel(target)
            else:
                channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
            # A channel of ours: the transport attaches no credentials of its own (the token goes
            # in each call's metadata), and none at all on the plaintext one.
            transport = ModelArmorGrpcAsyncIOTransport(host=target, channel=channel)
            self._client, self._loop = ma.ModelArmorAsyncClient(transport=transport), loop
        return self._client

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        from google.api_core import exceptions as api_exceptions

        # Blank texts (an assistant turn that only called tools) are not sent: nothing to check.
        texts = {n: i.text for n, i in enumerate(items) if i.text.strip()}
        if not texts:
            return Verdict(ALLOW)
        deadline = time.monotonic() + self.timeout
        try:
            async with asyncio.timeout(self.timeout):
                metadata = await self._metadata()
                results = await self._sanitize_all(phase, list(texts.values()), metadata, deadline)
        except TimeoutError:
            return failed(f"no answer within {self.timeout:g}s", self.fail_open)
        except api_exceptions.GoogleAPICallError as exc:
            return failed(_call_error(exc), self.fail_open)
        except gcp_auth.GCPCredentialsError as exc:
            return failed(f"no Google credentials: {exc}", self.fail_open)
        except Exception as exc:  # the client's own failures (transport, decoding): still failureMode's call
            log.exception("googleModelArmor: the call failed")
            return failed(f"the call failed: {type(exc).__name__}", self.fail_open)
        read = dict(zip(texts, (read_result(r) for r in results), strict=True))
        return decide([read.get(n, Reading()) for n in range(len(items))], self.spec, self.fail_open)

    async def _sanitize_all(
        self, phase: str, texts: list[str], metadata: tuple[tuple[str, str], ...], deadline: float
    ) -> list[modelarmor_v1.SanitizationResult]:
        if len(texts) == 1:
            return [await self._sanitize(phase, texts[0], metadata, deadline)]
        slots = asyncio.Semaphore(MAX_CALLS)

        async def one(text: str) -> modelarmor_v1.SanitizationResult:
            async with slots:
                return await self._sanitize(phase, text, metadata, deadline)

        try:
            # A task group: the first failure cancels the other calls.
            async with asyncio.TaskGroup() as group:
                calls = [group.create_task(one(t)) for t in texts]
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        return [c.result() for c in calls]

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self.tokens is None:
            return ()
        return (("authorization", f"Bearer {await self.tokens.token()}"),)

    async def _sanitize(
        self, phase: str, text: str, metadata: tuple[tuple[str, str], ...], deadline: float
    ) -> modelarmor_v1.SanitizationResult:
        from google.cloud import modelarmor_v1 as ma

        client = self.client()
        left = max(0.001, deadline - time.monotonic())
        data = ma.DataItem(text=text)
        # No retries: the guard has one time budget, and failureMode decides what a failure does.
        if phase == "request":
            request = ma.SanitizeUserPromptRequest(name=self.config.template, user_prompt_data=data)
            reply = await client.sanitize_user_prompt(
                request=request, retry=None, timeout=left, metadata=metadata
            )
        else:
            response = ma.SanitizeModelResponseRequest(name=self.config.template, model_response_data=data)
            reply = await client.sanitize_model_response(
                request=response, retry=None, timeout=left, metadata=metadata
            )
        return reply.sanitization_result


def _call_error(exc: BaseException) -> str:
    # The gRPC status (api_core's ``code`` is its HTTP equivalent).
    code = getattr(exc, "grpc_status_code", None) or getattr(exc, "code", None)
    name = getattr(code, "name", None) or str(code or type(exc).__name__)
    message = str(getattr(exc, "message", "") or "").splitlines()[0:1]
    return f"Model Armor answered {name}" + (f": {message[0][:200]}" if message else "")
