"""The provider's auth headers for one attempt, without blocking the event loop.

Keys from the config (or its environment variables) are used as they are. Without
a key, Bedrock signs with SigV4 from the AWS credential chain (``aws_auth``) and
Vertex sends an OAuth token from Application Default Credentials (``gcp_auth``):
both fetch and refresh in a worker thread, one fetch at a time per process, ahead
of expiry, with a short backoff after a failure. Only SigV4's signing (pure CPU)
runs on the loop.
"""

from __future__ import annotations

from extproc import aws_auth, gcp_auth
from extproc.errors import GatewayError
from extproc.gateway import KEY_HEADER, Upstream

ANTHROPIC_VERSION = "2023-06-01"


async def credential_headers(up: Upstream, method: str, path: str, body: bytes | None) -> dict[str, str]:
    """The provider's auth headers for this exact request (SigV4 signs method, path and body)."""
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
        headers["anthropic-version"] = ANTHROPIC_VERSION
    if secret is not None:
        name, prefix = KEY_HEADER[up.kind]
        headers[name] = prefix + secret
        return headers
    if up.kind == "bedrock":
        headers.update(await _sigv4(up, method, path, body or b""))
        return headers
    if up.kind == "vertex":
        headers["authorization"] = "Bearer " + await _gcp_token(up)
        return headers
    if up.kind in ("openai", "anthropic", "gemini", "azure"):
        raise GatewayError(
            500,
            f"the gateway has no credentials for provider {up.name!r}: set backendAuth.key",
            code="gateway_missing_credentials",
        )
    return headers


_AWS_HINT = "set backendAuth.key to a Bedrock API key, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"


async def _sigv4(up: Upstream, method: str, path: str, body: bytes) -> dict[str, str]:
    try:
        creds = await aws_auth.get_credentials()
    except aws_auth.NoAWSCredentials:
        raise GatewayError(
            500,
            f"the gateway has no AWS credentials for provider {up.name!r} ({_AWS_HINT})",
            code="gateway_missing_credentials",
        ) from None
    except aws_auth.AWSCredentialsError as exc:
        raise GatewayError(
            500,
            f"the gateway could not get AWS credentials for provider {up.name!r} ({exc}); {_AWS_HINT}",
            code="gateway_missing_credentials",
        ) from None
    scheme = "https" if up.tls else "http"
    return aws_auth.sigv4_headers(creds, up.settings.region, method, f"{scheme}://{up.authority}{path}", body)


async def _gcp_token(up: Upstream) -> str:
    try:
        return await gcp_auth.get_token()
    except gcp_auth.GCPCredentialsError as exc:
        raise GatewayError(
            500,
            f"the gateway has no Google credentials for provider {up.name!r} ({exc}); set backendAuth.key "
            "to an access token, or GOOGLE_APPLICATION_CREDENTIALS for Application Default Credentials",
            code="gateway_missing_credentials",
        ) from None


def reset() -> None:
    """Forget every cached credential and failure (tests, credential rotation)."""
    aws_auth.reset()
    gcp_auth.reset()
