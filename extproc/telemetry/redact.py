"""Credentials out of what the gateway writes: log lines, metric labels.

Two nets: the secrets this gateway knows (provider keys from its config and environment, inline
gateway API keys), replaced wherever they appear; and the shapes credentials have (bearer and basic
credentials, JWTs, provider key formats, ``key=``-style query parameters), for the ones it cannot
know (a client's own key pasted in a prompt, a provider echoing a key in an error message).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"

_SHAPES = re.compile(
    "|".join(
        [
            r"(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}",
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # a JWT
            r"\bsk-[A-Za-z0-9_-]{8,}",  # OpenAI, Anthropic (sk-ant-...)
            r"\bAIza[0-9A-Za-z_-]{16,}",  # Google API keys
            r"\bya29\.[0-9A-Za-z._-]{8,}",  # Google OAuth access tokens
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
        ]
    )
)
# The value of a query parameter that carries a credential (Gemini's ?key=, signed URLs).
_QUERY = re.compile(
    r"(?i)([?&](?:key|api[_-]?key|apikey|access[_-]?token|token|auth|signature|sig|x-amz-signature)=)"
    r"[^&#\s\"']+"
)
# Headers whose values are credentials (CEL's request.headers shows them masked).
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "x-amz-security-token",
    }
)

_known: tuple[str, ...] = ()
# Masked texts by text: most of what is masked per request repeats (paths, models, routes, error
# messages), and three regular expressions over each cost microseconds a call. Bounded (cleared when
# full) and emptied when the known secrets change.
_CACHE_MAX = 4096
_CACHE_TEXT_MAX = 512  # longer texts (a provider's error body) are masked each time
_cache: dict[str, str] = {}


def set_known_secrets(secrets: Iterable[str | None]) -> None:
    """The gateway's own secrets (at least 6 characters: shorter ones would mask ordinary words)."""
    global _known
    # Longest first: a key that contains another is replaced whole.
    _known = tuple(sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True))
    _cache.clear()


def mask(text: str) -> str:
    if len(text) > _CACHE_TEXT_MAX:
        return _mask(text)
    done = _cache.get(text)
    if done is None:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        done = _cache[text] = _mask(text)
    return done


def _mask(text: str) -> str:
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _SHAPES.sub(_masked_shape, text)
    return _QUERY.sub(lambda m: m.group(1) + MASK, text)


def _masked_shape(m: re.Match[str]) -> str:
    word = m.group(0)
    scheme = re.match(r"(?i)(bearer|basic)\s+", word)
    return (scheme.group(0) + MASK) if scheme else MASK


def mask_value(value: Any) -> Any:
    """Strings masked, lists and maps walked; other values as they are."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    return value


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    """Request headers for CEL: credentials masked, pseudo-headers and the gateway's own left out."""
    out = {}
    for name, value in headers.items():
        if name.startswith(":") or name.startswith("x-gw-"):
            continue
        out[name] = MASK if name in CREDENTIAL_HEADERS else mask(value)
    return out
