"""AWS credentials for Bedrock from botocore's standard chain, and SigV4 signing.

Used when a Bedrock provider has no ``backendAuth.key``. Walking the chain
(environment, config files, SSO, container and instance metadata) and refreshing
temporary credentials are blocking calls: they run in a worker thread
(``extproc.refresh``), one at a time. Temporary credentials (botocore's
``RefreshableCredentials``) are re-read in the background when botocore's own
advisory refresh window opens and waited for only in its mandatory window. No
credentials, or a failed refresh, is retried after a short backoff and the chain
walked again. Signing itself is pure CPU and runs inline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from extproc.refresh import Fetched, Refreshing


class AWSCredentialsError(RuntimeError):
    """The chain gave credentials, but reading or refreshing them failed."""


class NoAWSCredentials(AWSCredentialsError):
    """No link of the chain had credentials."""


def credential_chain() -> Any:
    """botocore's credential chain: a ``Credentials`` object, or None (blocking)."""
    from botocore.session import Session

    return Session().get_credentials()


class AWSCredentials:
    """Frozen credentials from one resolved chain, shared by all requests of the process."""

    def __init__(
        self,
        resolve: Callable[[], Any] = credential_chain,
        *,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolve = resolve
        self._source: Any = None
        self.cache: Refreshing[Any] = Refreshing(
            "AWS credentials", self._fetch, min_backoff=min_backoff, max_backoff=max_backoff, clock=clock
        )

    async def frozen(self) -> Any:
        """botocore ``ReadOnlyCredentials`` (access key, secret key, token) usable now."""
        return await self.cache.get()

    def reset(self) -> None:
        self._source = None
        self.cache.reset()

    def _fetch(self) -> Fetched[Any]:
        """Runs in a worker thread, never two at once (``Refreshing`` is single-flight)."""
        try:
            source = self._source or self._resolve()
            if source is None:
                raise NoAWSCredentials("no link of the AWS credential chain has credentials")
            # May refresh temporary credentials (STS, SSO, metadata): blocking, hence here.
            frozen = source.get_frozen_credentials()
        except AWSCredentialsError:
            self._source = None
            raise
        except Exception as exc:  # botocore's errors; walk the whole chain again next time
            self._source = None
            text = str(exc).strip()
            raise AWSCredentialsError(text.splitlines()[0] if text else type(exc).__name__) from None
        self._source = source
        return Fetched(frozen, *_renewal(source))


def _renewal(source: Any) -> tuple[float | None, float | None]:
    """(refresh_at, usable_until) for botocore credentials: its advisory and mandatory refresh times.

    botocore keeps the expiry private (its ``refresh_needed`` reads the same fields); static
    credentials have none and are never re-read.
    """
    expiry = getattr(source, "_expiry_time", None)
    if expiry is None:
        return None, None
    at = expiry.timestamp()
    advisory = getattr(source, "_advisory_refresh_timeout", 15 * 60)
    mandatory = getattr(source, "_mandatory_refresh_timeout", 10 * 60)
    return at - advisory, at - mandatory


def sigv4_headers(
    credentials: Any, region: str, method: str, url: str, body: bytes, service: str = "bedrock"
) -> dict[str, str]:
    """The SigV4 headers (authorization, x-amz-date, x-amz-security-token) for this exact request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body, headers={"content-type": "application/json"})
    # content-length is not signed: Envoy may rewrite it (DESIGN.md, lessons from peers).
    SigV4Auth(credentials, service, region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items() if k.lower() != "content-type"}


DEFAULT = AWSCredentials()


async def get_credentials() -> Any:
    """The process's AWS credentials; waits (off the event loop) only when none are usable."""
    return await DEFAULT.frozen()


def reset() -> None:
    """Forget the resolved chain and its credentials (tests, credential rotation)."""
    DEFAULT.reset()
