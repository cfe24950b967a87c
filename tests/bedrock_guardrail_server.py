"""A test endpoint speaking Bedrock's ApplyGuardrail wire protocol, for boto3 to talk to.

``POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply`` with the JSON body
of the AWS API reference (``source`` INPUT or OUTPUT, ``content`` text blocks), answered with
its output shape (``usage``, ``action``, ``outputs``, ``assessments``, ``guardrailCoverage``)
or its errors (``x-amzn-ErrorType`` and ``{"message"}``, as restJson1 services answer).

Every call must be authenticated as AWS would have it: a SigV4 signature for service
``bedrock``, recomputed here from what arrived with the secret of a known access key (a wrong
signature, scope or service is AWS's 403), or a Bedrock API key as a bearer token.

The guardrails it knows are configured like real ones: PII entities (EMAIL, PHONE) each BLOCKED
or ANONYMIZED (``{EMAIL}``, as Bedrock masks), denied custom words, and the blocked messaging
that replaces a blocked text. One output per text block sent when masking (or, with
``one_output``, all of them in one), the guardrail's blocked messaging as the only output when
blocking. Test hooks: a text with
``slow-guardrail`` answers after 2 s; ``break-guardrail`` is a 500 InternalServerException.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from extproc.ports import free_port

PII = {
    "EMAIL": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "PHONE": re.compile(r"\(\d{3}\) \d{3}-\d{4}"),
}
DEFAULT_BLOCKED = "Sorry, the model cannot answer this question."
_PATH = re.compile(r"^/guardrail/(?P<id>[^/]+)/version/(?P<version>[^/]+)/apply$")
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]+)$")


@dataclass
class Guardrail:
    pii: dict[str, str] = field(default_factory=dict)  # entity type -> BLOCKED | ANONYMIZED
    words: tuple[str, ...] = ()  # denied custom words (BLOCKED)
    blocked_input: str = DEFAULT_BLOCKED
    blocked_output: str = DEFAULT_BLOCKED
    one_output: bool = False  # masked texts as one output, whatever the number of blocks sent


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    auth: str  # sigv4:<access key> or bearer


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": kind})


def assess(guardrail: Guardrail, source: str, texts: list[str]) -> dict[str, Any]:
    """ApplyGuardrail's answer for these texts (outputScope INTERVENTIONS, the default)."""
    pii: list[dict[str, Any]] = []
    words: list[dict[str, Any]] = []
    masked: list[str] = []
    for text in texts:
        for kind, action in guardrail.pii.items():
            for m in PII[kind].finditer(text):
                pii.append({"match": m.group(), "type": kind, "action": action, "detected": True})
            if action == "ANONYMIZED":
                text = PII[kind].sub("{" + kind + "}", text)
        masked.append(text)
        words += [
            {"match": w, "action": "BLOCKED", "detected": True} for w in guardrail.words if w in text.lower()
        ]
    assessment: dict[str, Any] = {}
    if pii:
        assessment["sensitiveInformationPolicy"] = {"piiEntities": pii, "regexes": []}
    if words:
        assessment["wordPolicy"] = {"customWords": words, "managedWordLists": []}
    chars = sum(len(t) for t in texts)
    assessment["invocationMetrics"] = {
        "guardrailProcessingLatency": 3,
        "usage": _usage(texts),
        "guardrailCoverage": {"textCharacters": {"guarded": chars, "total": chars}},
    }
    blocked = any(e["action"] == "BLOCKED" for e in pii + words)
    if blocked:
        action, outputs = (
            "GUARDRAIL_INTERVENED",
            [guardrail.blocked_input if source == "INPUT" else guardrail.blocked_output],
        )
    elif pii:
        action, outputs = "GUARDRAIL_INTERVENED", ["\n".join(masked)] if guardrail.one_output else masked
    else:
        action, outputs = "NONE", []
    return {
        "usage": _usage(texts),
        "action": action,
        **({"actionReason": "Guardrail blocked."} if blocked else {}),
        "outputs": [{"text": t} for t in outputs],
        "assessments": [assessment],
        "guardrailCoverage": {"textCharacters": {"guarded": chars, "total": chars}},
    }


def _usage(texts: list[str]) -> dict[str, int]:
    units = sum(-(-len(t) // 1000) for t in texts)  # text units of 1,000 characters
    return {
        "topicPolicyUnits": 0,
        "contentPolicyUnits": 0,
        "wordPolicyUnits": units,
        "sensitiveInformationPolicyUnits": units,
        "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0,
    }


@dataclass
class GuardrailServer:
    guardrails: dict[tuple[str, str], Guardrail]
    keys: dict[str, str]  # access key id -> secret access key
    bearer: str | None = None  # an accepted Bedrock API key
    port: int = field(default_factory=free_port)
    received: list[Call] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_auth(self, request: web.Request, body: bytes) -> tuple[str | None, str]:
        """(who, why not): an access key id or "bearer", or None and AWS's reason for a 403."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return ("bearer", "") if self.bearer and header[7:] == self.bearer else (None, "Invalid API Key")
        m = _AUTH.match(header)
        if m is None:
            return None, "Missing Authentication Token"
        credential, signed, signature = m.groups()
        key, date, region, service, terminator = credential.split("/")
        if service != "bedrock" or terminator != "aws4_request":
            return None, f"Credential should be scoped to correct service: 'bedrock'. (got {service!r})"
        if key not in self.keys:
            return None, "The security token included in the request is invalid."
        stamp = request.headers.get("X-Amz-Date", "")
        if not stamp.startswith(date):
            return None, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date"
        names = signed.split(";")
        if "host" not in names:
            return None, "'Host' must be a 'SignedHeader' in the AWS Authorization."
        aws = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['Host']}{request.raw_path}",
            data=body,
            headers={n: request.headers[n] for n in names if n in request.headers},
        )
        token = request.headers.get("X-Amz-Security-Token")
        signer = SigV4Auth(Credentials(key, self.keys[key], token), "bedrock", region)
        aws.context["timestamp"] = stamp
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if expected != signature:
            return None, "The request signature we calculated does not match the signature you provided."
        return f"sigv4:{key}:{region}", ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        # Matched on the path as sent: an ARN identifier's "/" arrives percent-encoded.
        m = _PATH.match(request.raw_path.split("?")[0])
        if request.method != "POST" or m is None:
            return _error(404, "UnknownOperationException", "Unknown operation")
        who, why = self.check_auth(request, raw)
        if who is None:
            kind = "InvalidSignatureException" if "signature" in why else "UnrecognizedClientException"
            return _error(403, kind, why)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "SerializationException", "Could not parse the request body")
        self.received.append(Call(request.path, dict(request.headers), body, who))
        source, content = body.get("source"), body.get("content")
        extra = set(body) - {"source", "content", "outputScope"}
        if source not in ("INPUT", "OUTPUT") or not isinstance(content, list) or extra:
            return _error(
                400, "ValidationException", f"1 validation error detected: source={source!r} {extra}"
            )
        texts = [b["text"]["text"] for b in content if isinstance(b, dict) and "text" in b]
        guardrail = self.guardrails.get((unquote(m["id"]), unquote(m["version"])))
        if guardrail is None:
            return _error(
                404,
                "ResourceNotFoundException",
                "The guardrail identifier or version provided in the request does not exist.",
            )
        joined = " ".join(texts)
        if "break-guardrail" in joined:
            return _error(500, "InternalServerException", "The server encountered an internal error.")
        if "slow-guardrail" in joined:
            await asyncio.sleep(2)
        return web.json_response(assess(guardrail, source, texts), headers={"x-amzn-RequestId": "test-req"})

    def start(self) -> GuardrailServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, name="bedrock-guardrail", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def clear(self) -> None:
        self.received.clear()
