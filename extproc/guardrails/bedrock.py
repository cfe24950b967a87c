"""The ``bedrockGuardrails`` guard: AWS Bedrock's ApplyGuardrail through boto3's real client.

Requests are checked as ``source: INPUT`` (the texts of the guard's scope, one content block
each), answers as ``source: OUTPUT`` (each choice's text; a stream in overlapping windows of
``streamBatch`` characters, extproc/guardrails/overlap.py, so a finding split between two calls
is seen whole).
extproc/guardrails/bedrock_reply.py reads the answer: a block rejects with the guardrail's
message, an anonymization replaces the texts. Masked outputs that cannot be placed (not one per
text) are asked for again one text at a time, in parallel; still unplaceable, they reject.

boto3 is synchronous. Its calls (credentials from the chain included, which may walk to the
instance metadata service) run in a thread pool of this process with at most ``POOL_SIZE``
calls at once; the event loop only waits for them. Each guard has one client, made on first
use in that pool and kept: boto3 clients are thread-safe and reuse their connections. A call
that has waited in the queue past its deadline is not made. No answer in ``timeout``, an AWS
error or an unreadable answer: ``failureMode`` decides (failClosed, the default: 503).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from extproc.config.base import parse_duration
from extproc.config.bedrock_guardrails import BedrockGuardrails
from extproc.config.guardrails import GuardSpec
from extproc.gateway import resolve_secret
from extproc.guardrails.base import (
    ALLOW,
    FAIL_OPEN,
    Guard,
    TextItem,
    Verdict,
    merge,
    unavailable,
)
from extproc.guardrails.bedrock_reply import InvalidReply, Unplaceable, read_reply
from extproc.guardrails.http import call_timeout

if TYPE_CHECKING:
    from extproc.pipeline.exchange import Exchange

log = logging.getLogger("gateway.guardrails")

POOL_SIZE = 16  # ApplyGuardrail calls in flight per extproc process (each holds a thread)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """Made on first use: a process with no Bedrock guardrail to ask starts no threads."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="bedrock-guardrail")
        return _pool


class GuardrailCallFailed(Exception):
    """ApplyGuardrail could not be asked, or refused (the message says why, without secrets)."""


def _secret(value: str | None, what: str) -> str | None:
    secret, missing = resolve_secret(value)
    if missing:
        raise GuardrailCallFailed(f"{what}: environment variable {missing} is not set")
    return secret


def make_client(config: BedrockGuardrails, timeout: float) -> Any:
    """A ``bedrock-runtime`` client for this guard (blocking: call it in the pool)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    auth = config.auth
    session_args: dict[str, Any] = {"region_name": config.region}
    if auth is not None and auth.aws is not None:
        session_args["aws_access_key_id"] = _secret(auth.aws.access_key_id, "accessKeyId")
        session_args["aws_secret_access_key"] = _secret(auth.aws.secret_access_key, "secretAccessKey")
        session_args["aws_session_token"] = _secret(auth.aws.session_token, "sessionToken")
    bearer = _secret(auth.key, "key") if auth is not None and auth.key is not None else None
    client_config = Config(
        region_name=config.region,
        # A little past the guard's own timeout, which decides (the thread ends soon after it).
        connect_timeout=timeout + 0.25,
        read_timeout=timeout + 0.25,
        # One attempt: the gateway's timeout and failureMode decide, not botocore's retries.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=POOL_SIZE,
        # A Bedrock API key is a bearer token instead of a signature (as a Bedrock provider's key).
        **({"signature_version": UNSIGNED} if bearer else {}),
    )
    client = boto3.session.Session(**session_args).client(
        "bedrock-runtime", endpoint_url=config.endpoint_url, config=client_config
    )
    if bearer:

        def add_bearer(request: Any, **_: Any) -> None:
            request.headers["Authorization"] = f"Bearer {bearer}"

        client.meta.events.register("before-sign.bedrock-runtime.ApplyGuardrail", add_bearer)
    return client


def _describe(exc: Exception) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message") or "").splitlines()[0:1]
        return f"ApplyGuardrail answered HTTP {status} {error.get('Code')}: {''.join(message)}"[:300]
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


class BedrockGuard(Guard):
    kind = "bedrockGuardrails"

    def __init__(self, spec: GuardSpec) -> None:
        super().__init__(spec)
        config: BedrockGuardrails = spec.config
        self.config = config
        self.name = f"{config.guardrail_identifier}:{config.guardrail_version}"
        configured = None if config.timeout is None else parse_duration(config.timeout)
        self.timeout = call_timeout(configured, f"bedrockGuardrails {self.name}")
        self.fail_open = config.failure_mode == "failOpen"
        self._client: Any = None
        self._client_lock = threading.Lock()

    def client(self) -> Any:
        """This guard's client, made once (in a pool thread: making it may read credentials)."""
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.config, self.timeout)
            return self._client

    def _apply(self, source: str, texts: list[str], deadline: float) -> Any:
        """In a pool thread: one ApplyGuardrail call, unless its caller has given up on it."""
        if time.monotonic() >= deadline:
            raise GuardrailCallFailed("the call waited for a free thread past its timeout")
        try:
            return self.client().apply_guardrail(
                guardrailIdentifier=self.config.guardrail_identifier,
                guardrailVersion=self.config.guardrail_version,
                source=source,
                content=[{"text": {"text": t}} for t in texts],
            )
        except GuardrailCallFailed:
            raise
        except Exception as exc:  # botocore's errors: AWS's answer, connection, credentials
            raise GuardrailCallFailed(_describe(exc)) from None

    async def check(self, phase: str, items: list[TextItem], ex: Exchange) -> Verdict:
        # Empty texts are not sent (there is nothing to check); they keep their place.
        sent = [i for i, item in enumerate(items) if item.text]
        if not sent:
            return Verdict(ALLOW)
        source = "INPUT" if phase == "request" else "OUTPUT"
        deadline = time.monotonic() + self.timeout
        try:
            verdict = await self._decide(phase, [items[i].text for i in sent], deadline)
        except TimeoutError:
            return self._failed(f"no answer within {self.timeout:g}s")
        except (GuardrailCallFailed, InvalidReply) as exc:
            return self._failed(str(exc))
        if verdict.texts is not None:
            placed: list[str | None] = [None] * len(items)
            for i, text in zip(sent, verdict.texts, strict=True):
                placed[i] = text if text != items[i].text else None
            verdict.texts = placed
        if verdict.blocks or verdict.texts:
            log.info("bedrock guardrail %s (%s): %s, %s", self.name, source, verdict.action, verdict.reason)
        return verdict

    async def _decide(self, phase: str, texts: list[str], deadline: float) -> Verdict:
        try:
            return await self._ask(phase, texts, deadline)
        except Unplaceable as unplaceable:
            if len(texts) == 1:
                return unplaceable.verdict
        # Masked outputs that do not line up with several texts: each text on its own.
        return _combined(await asyncio.gather(*(self._decide(phase, [t], deadline) for t in texts)))

    async def _ask(self, phase: str, texts: list[str], deadline: float) -> Verdict:
        """One ApplyGuardrail call in the pool, waited for until ``deadline``."""
        source = "INPUT" if phase == "request" else "OUTPUT"
        call = asyncio.get_running_loop().run_in_executor(pool(), self._apply, source, texts, deadline)
        reply = await asyncio.wait_for(call, max(0.0, deadline - time.monotonic()))
        return read_reply(phase, reply, len(texts), self.spec.rejection)

    def _failed(self, why: str) -> Verdict:
        if self.fail_open:
            log.warning("bedrock guardrail %s failed (%s): failing open", self.name, why)
            return Verdict(FAIL_OPEN, reason=why)
        log.warning("bedrock guardrail %s failed (%s): failing closed", self.name, why)
        return unavailable("bedrockGuardrails", why)


def _combined(verdicts: list[Verdict]) -> Verdict:
    """One text per call, put back together: the first reject decides, else every mask in order."""
    for verdict in verdicts:
        if verdict.blocks:
            return verdict
    out = Verdict(ALLOW, texts=[])
    for verdict in verdicts:
        merge(out, verdict)
        assert out.texts is not None
        out.texts.append(verdict.texts[0] if verdict.texts else None)
    if out.action == ALLOW:
        out.texts = None
    return out
