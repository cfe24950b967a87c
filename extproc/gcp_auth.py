"""OAuth access tokens for Vertex AI from Google's Application Default Credentials.

Used when a Vertex provider has no ``backendAuth.key``: google-auth finds the
credentials the standard way (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user
credentials, the metadata server) and trades them for an access token that lives
about an hour. Finding the credentials and each token exchange are blocking HTTPS
calls: they run in a worker thread (``extproc.refresh``), one at a time, and a new
token is fetched in the background five minutes before the old one expires.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from extproc.refresh import Fetched, Refreshing

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# Start a new token this long before the old one expires; requests keep the old one meanwhile.
REFRESH_AHEAD = 300.0
# Stop using a token this long before it expires (requests in flight, clock skew).
EXPIRY_MARGIN = 60.0
# A token endpoint or metadata server that hangs must not hold the worker thread forever.
HTTP_TIMEOUT = 30.0


class GCPCredentialsError(RuntimeError):
    pass


def application_default() -> Any:
    """google-auth's Application Default Credentials (blocking: may probe the metadata server)."""
    import google.auth

    credentials, _ = google.auth.default(scopes=SCOPES)
    return credentials


class GoogleTokens:
    """Access tokens from one credentials object, shared by all requests of the process."""

    def __init__(
        self,
        load: Callable[[], Any] = application_default,
        *,
        refresh_ahead: float = REFRESH_AHEAD,
        expiry_margin: float = EXPIRY_MARGIN,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._load = load
        self._refresh_ahead = refresh_ahead
        self._expiry_margin = expiry_margin
        self._credentials: Any = None
        self._http: Any = None
        self.cache: Refreshing[str] = Refreshing(
            "Google access token", self._fetch, min_backoff=min_backoff, max_backoff=max_backoff
        )

    async def token(self) -> str:
        return await self.cache.get()

    def reset(self) -> None:
        self._credentials = None
        self.cache.reset()

    def _fetch(self) -> Fetched[str]:
        """Runs in a worker thread, never two at once (``Refreshing`` is single-flight)."""
        import google.auth.exceptions
        import urllib3
        from google.auth.transport.urllib3 import Request

        if self._http is None:
            self._http = urllib3.PoolManager(timeout=HTTP_TIMEOUT)
        try:
            if self._credentials is None:
                self._credentials = self._load()
            self._credentials.refresh(Request(self._http))
        except google.auth.exceptions.DefaultCredentialsError as exc:
            self._credentials = None  # none found (yet): look again on the next try
            raise GCPCredentialsError(_first_line(exc)) from None
        except Exception as exc:  # google-auth's own errors, and transport errors it does not wrap
            raise GCPCredentialsError(_first_line(exc)) from None
        token = self._credentials.token
        if not token:
            raise GCPCredentialsError("Google credentials gave no access token")
        expiry: datetime.datetime | None = self._credentials.expiry
        if expiry is None:
            return Fetched(str(token))
        # google-auth keeps expiry as a naive UTC datetime.
        at = expiry.replace(tzinfo=datetime.UTC).timestamp()
        return Fetched(str(token), refresh_at=at - self._refresh_ahead, usable_until=at - self._expiry_margin)


def _first_line(exc: Exception) -> str:
    # google-auth's errors carry the message first and the raw response after it.
    text = str(exc.args[0] if exc.args else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


DEFAULT = GoogleTokens()


async def get_token() -> str:
    """A usable access token; waits (off the event loop) only when there is none."""
    return await DEFAULT.token()


def access_token() -> str:
    """The same token for synchronous callers (``egress.credential_headers``); blocks while fetching."""
    return DEFAULT.cache.get_blocking()


def reset() -> None:
    """Forget cached credentials and token (tests, credential rotation)."""
    DEFAULT.reset()
