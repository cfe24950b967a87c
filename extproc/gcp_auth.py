"""OAuth access tokens for Vertex AI from Google's Application Default Credentials.

Used when a Vertex provider has no ``backendAuth.key``: google-auth finds the
credentials the standard way (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user
credentials, the metadata server) and refreshes the token before it expires.
One credentials object per process, shared by all requests; a refresh is a
blocking HTTPS call about once an hour, done under a lock.
"""

from __future__ import annotations

import threading
from typing import Any

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class GCPCredentialsError(RuntimeError):
    pass


_lock = threading.Lock()
_credentials: Any = None


def access_token() -> str:
    """A valid access token, refreshed when missing or about to expire."""
    global _credentials
    import google.auth
    import google.auth.exceptions
    import urllib3
    from google.auth.transport.urllib3 import Request

    with _lock:
        try:
            if _credentials is None:
                _credentials, _ = google.auth.default(scopes=SCOPES)
            if not _credentials.valid:
                _credentials.refresh(Request(urllib3.PoolManager()))
        except google.auth.exceptions.GoogleAuthError as exc:
            _credentials = (
                None if isinstance(exc, google.auth.exceptions.DefaultCredentialsError) else _credentials
            )
            raise GCPCredentialsError(str(exc).splitlines()[0]) from None
        token = _credentials.token
    if not token:
        raise GCPCredentialsError("Google credentials gave no access token")
    return str(token)


def reset() -> None:
    """Forget cached credentials (tests, credential rotation)."""
    global _credentials
    with _lock:
        _credentials = None
