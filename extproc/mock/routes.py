"""Provider keys: which (method, path) belongs to which provider and operation, how each checks its
credentials and how it names itself in reply text."""

from __future__ import annotations

import re
from urllib.parse import unquote

from extproc.mock import auth

# Label used in reply text per provider key.
LABELS = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex-gemini": "vertex",
    "vertex-anthropic": "vertex",
    "bedrock": "bedrock",
}

AUTH: dict[str, auth.Checker] = {
    "openai": auth.openai,
    "azure": auth.azure,
    "anthropic": auth.anthropic,
    "gemini": auth.gemini,
    "vertex-gemini": auth.vertex,
    "vertex-anthropic": auth.vertex,
    "bedrock": auth.bedrock,
    "google-oauth": lambda headers, query: None,  # the token endpoint authenticates by the signed assertion
}

_VERTEX = r"^/v1(?:beta1)?/projects/[^/]+/locations/[^/]+/publishers"
_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    # Google's OAuth token endpoint (a service account's ``token_uri``), for Vertex ADC tests.
    ("POST", re.compile(r"^/token$"), "google-oauth", "token"),
    ("POST", re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$"), "azure", "chat"),
    ("POST", re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/embeddings$"), "azure", "embeddings"),
    # Before the generic Google routes: these actions are embeddings, every other one is Gemini.
    (
        "POST",
        re.compile(_VERTEX + r"/google/models/(?P<model>[^/:]+):(?P<action>predict)$"),
        "vertex-gemini",
        "vertex_predict",
    ),
    (
        "POST",
        re.compile(_VERTEX + r"/google/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "vertex-gemini",
        "gemini",
    ),
    (
        "POST",
        re.compile(_VERTEX + r"/anthropic/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "vertex-anthropic",
        "raw_predict",
    ),
    (
        "POST",
        re.compile(
            r"^/v1(?:alpha|beta)?/models/(?P<model>[^/:]+):(?P<action>embedContent|batchEmbedContents)$"
        ),
        "gemini",
        "gemini_embed",
    ),
    (
        "POST",
        re.compile(r"^/v1(?:alpha|beta)?/models/(?P<model>[^/:]+):(?P<action>\w+)$"),
        "gemini",
        "gemini",
    ),
    (
        "POST",
        re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream)$"),
        "bedrock",
        "converse",
    ),
    ("POST", re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>invoke)$"), "bedrock", "invoke"),
    ("POST", re.compile(r"^(?:/.*)?/v1/messages/count_tokens$"), "anthropic", "count_tokens"),
    ("POST", re.compile(r"^(?:/.*)?/v1/messages$"), "anthropic", "messages"),
    ("POST", re.compile(r"^(?:/.*)?/chat/completions$"), "openai", "chat"),
    ("POST", re.compile(r"^(?:/.*)?/moderations$"), "openai", "moderations"),
    ("POST", re.compile(r"^(?:/.*)?/embeddings$"), "openai", "embeddings"),
    ("GET", re.compile(r"^(?:/.*)?/models$"), "openai", "models"),
]


def match_route(method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
    """Return (provider, operation, url-decoded params) for a raw (still percent-encoded) path."""
    for route_method, pattern, provider, op in _ROUTES:
        if method != route_method:
            continue
        found = pattern.match(path)
        if found:
            params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
            return provider, op, params
    return None
