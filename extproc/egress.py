"""What one attempt sends to the provider Envoy picked: path, credentials, body.

Pure except for credentials (environment, AWS credential chain) and SigV4's clock.
The translators themselves live in ``extproc.translate``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import quote

import orjson

from extproc.errors import GatewayError
from extproc.gateway import KEY_HEADER, Upstream
from extproc.translate import anthropic, bedrock, gemini, openai
from extproc.translate.base import TranslationError

# Which translator speaks each provider kind's chat API.
_CHAT_MODULE: dict[str, ModuleType] = {
    "openai": openai,
    "azure": openai,
    "anthropic": anthropic,
    "gemini": gemini,
    "vertex": gemini,
    "bedrock": bedrock,
}


@dataclass
class Attempt:
    """What the upstream phase sends for one attempt, and how to read the answer."""

    path: str
    body: bytes | None
    set_headers: dict[str, str] = field(default_factory=dict)
    translate_response: bool = False
    stream: bool = False
    model: str = ""
    module: ModuleType | None = None
    include_usage: bool = False


def is_vertex_claude(up: Upstream, model: str) -> bool:
    return up.kind == "vertex" and model.startswith("claude")


def upstream_model(up: Upstream, requested: str | None) -> str:
    """The provider's configured model wins over the client's (agentgateway semantics)."""
    model = up.model or requested
    if not model:
        raise GatewayError(400, "you must provide a model parameter", code="missing_model", param="model")
    return model


def chat_path(up: Upstream, model: str, stream: bool) -> str:
    if up.path_override:
        return up.path_override
    s = up.settings
    if up.kind == "openai":
        return (up.path_prefix or "/v1").rstrip("/") + "/chat/completions"
    if up.kind == "azure":
        deployment = s.deployment_name or model
        return (
            f"/openai/deployments/{quote(deployment, safe='')}/chat/completions?api-version={s.api_version}"
        )
    if up.kind == "anthropic":
        return (up.path_prefix or "/v1").rstrip("/") + "/messages"
    if up.kind == "gemini":
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{quote(model, safe='')}:{verb}"
    if up.kind == "vertex":
        if not s.project_id:
            raise GatewayError(500, f"provider {up.name!r}: vertex needs projectId", code="gateway_config")
        base = f"/v1/projects/{s.project_id}/locations/{s.region}"
        if is_vertex_claude(up, model):
            verb = "streamRawPredict" if stream else "rawPredict"
            return f"{base}/publishers/anthropic/models/{quote(model, safe='')}:{verb}"
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{base}/publishers/google/models/{quote(model, safe='')}:{verb}"
    if up.kind == "bedrock":
        verb = "converse-stream" if stream else "converse"
        return f"/model/{quote(model, safe='')}/{verb}"
    raise GatewayError(500, f"unknown provider kind {up.kind}")


def chat_attempt(up: Upstream, req: dict[str, Any]) -> Attempt:
    """An OpenAI chat.completions request, for this upstream."""
    model = upstream_model(up, req.get("model"))
    stream = bool(req.get("stream"))
    module = _CHAT_MODULE[up.kind]
    try:
        if is_vertex_claude(up, model):
            body = anthropic.vertex_chat_request(req, model)
        else:
            body = module.chat_request(req, model)
    except TranslationError as exc:
        raise GatewayError(400, str(exc), code="unsupported_parameter", param=exc.param) from None
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    return Attempt(
        path=chat_path(up, model, stream),
        body=orjson.dumps(body),
        translate_response=module is not openai,
        stream=stream,
        model=model,
        module=anthropic if is_vertex_claude(up, model) else module,
        include_usage=include_usage,
    )


def messages_attempt(up: Upstream, req: dict[str, Any]) -> Attempt:
    """An Anthropic Messages request. Native on Anthropic; other providers come with issue #3."""
    if up.kind != "anthropic":
        raise GatewayError(
            400,
            f"the Messages API is not yet translated for provider {up.kind!r}; use /v1/chat/completions",
            code="unsupported_api",
        )
    model = upstream_model(up, req.get("model"))
    if model != req.get("model"):
        req = {**req, "model": model}
    return Attempt(
        path=(up.path_prefix or "/v1").rstrip("/") + "/messages", body=orjson.dumps(req), model=model
    )


def passthrough_attempt(up: Upstream, client_path: str, body: bytes | None) -> Attempt:
    return Attempt(path=up.path_override or client_path, body=body)


# --- credentials ---------------------------------------------------------


def credential_headers(up: Upstream, method: str, path: str, body: bytes | None) -> dict[str, str]:
    """The provider's auth headers for this exact request (SigV4 signs path and body)."""
    secret, missing = up.secret()
    if missing:
        raise GatewayError(
            500,
            f"the gateway has no credentials for provider {up.name!r}: "
            f"environment variable {missing} is not set",
            code="gateway_missing_credentials",
        )
    headers: dict[str, str] = {}
    if up.kind == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    if secret is not None:
        name, prefix = KEY_HEADER[up.kind]
        headers[name] = prefix + secret
        return headers
    if up.kind == "bedrock":
        headers.update(_sigv4(up, method, path, body or b""))
        return headers
    if up.kind in ("openai", "anthropic", "gemini", "azure", "vertex"):
        raise GatewayError(
            500,
            f"the gateway has no credentials for provider {up.name!r}: set backendAuth.key",
            code="gateway_missing_credentials",
        )
    return headers


@functools.lru_cache(maxsize=1)
def _aws_credentials() -> Any:
    from botocore.session import Session

    return Session().get_credentials()


def _sigv4(up: Upstream, method: str, path: str, body: bytes) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = _aws_credentials()
    if creds is None:
        raise GatewayError(
            500,
            f"the gateway has no AWS credentials for provider {up.name!r} "
            "(set backendAuth.key to a Bedrock API key, "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            code="gateway_missing_credentials",
        )
    scheme = "https" if up.tls else "http"
    request = AWSRequest(
        method=method,
        url=f"{scheme}://{up.authority}{path}",
        data=body,
        headers={"content-type": "application/json"},
    )
    # content-length is not signed: Envoy may rewrite it (DESIGN.md, lessons from peers).
    SigV4Auth(creds.get_frozen_credentials(), "bedrock", up.settings.region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items() if k.lower() != "content-type"}


def now() -> int:
    return int(time.time())
