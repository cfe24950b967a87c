"""OpenAI ``POST /v1/embeddings`` <-> each provider's embeddings API.

Families, by provider kind and model:

- ``openai``: OpenAI, Azure OpenAI and OpenAI-compatible servers; the body passes through.
- ``gemini``: Gemini AI Studio ``models/{m}:batchEmbedContents``.
- ``vertex``: Vertex AI ``publishers/google/models/{m}:predict`` (text embedding models, and
  ``multimodalembedding`` with text input).
- ``bedrock-titan``, ``bedrock-cohere``, ``bedrock-nova``: Bedrock ``/model/{id}/invoke`` with the
  model's own body (Titan text/image embeddings, Cohere Embed v3/v4, Nova multimodal embeddings).

Besides the OpenAI fields (``input``, ``dimensions``, ``encoding_format``, ``user``) the request may
carry the extensions other gateways accept: ``task_type`` (Google's vocabulary, e.g.
``RETRIEVAL_DOCUMENT``; mapped for Cohere and Nova), ``title``, ``auto_truncate``, ``input_type``
(Cohere's own value) and ``normalize`` (Titan v2).

Providers answer with floats; ``encoding_format: "base64"`` is applied by the gateway
(``embeddings_response``), as OpenAI does it: the little-endian float32 bytes of each vector,
base64-encoded.

Pure: dicts in, dicts out. Response translation never raises (like the chat translators): a vector
of the wrong shape becomes an empty list rather than an exception in the response path.

This module picks the family and path and dispatches; ``embeddings_request`` builds each family's
request body and ``embeddings_response`` reads each family's vectors back.
"""

from __future__ import annotations

from urllib.parse import quote

from .base import Json, TranslationError
from .embeddings_request import _REQUEST, _check_encoding, _gemini_id
from .embeddings_response import _EXTRACT, _item, _openai_response
from .usage import usage_of

# ---------------------------------------------------------------- family and path


def family(kind: str, model: str) -> str:
    """Which embeddings API serves ``model`` on a provider of ``kind``."""
    if kind in ("openai", "azure"):
        return "openai"
    if kind == "gemini":
        return "gemini"
    if kind == "vertex":
        if model.startswith("claude"):
            raise TranslationError(f"the Anthropic model {model!r} on Vertex AI has no embeddings", "model")
        return "vertex"
    if kind == "bedrock":
        return _bedrock_family(model)
    raise TranslationError(f"provider kind {kind!r} has no embeddings API", "model")


def _bedrock_family(model: str) -> str:
    # Substrings, so that region prefixes ("us.") and foundation-model ARNs match too.
    m = model.lower()
    if "titan-embed" in m:
        return "bedrock-titan"
    if "cohere.embed" in m:
        return "bedrock-cohere"
    if "nova" in m and "embed" in m:
        return "bedrock-nova"
    raise TranslationError(
        f"the Bedrock model {model!r} is not an embeddings model the gateway knows "
        "(amazon.titan-embed-*, cohere.embed-*, amazon.nova-*-embeddings-*); "
        "an inference profile ARN must be replaced by the model id",
        "model",
    )


def upstream_path(kind: str, model: str) -> str | None:
    """The path for families whose path needs only the model; None where config values are needed."""
    fam = family(kind, model)
    if fam == "gemini":
        return f"/v1beta/models/{quote(_gemini_id(model), safe='')}:batchEmbedContents"
    if fam.startswith("bedrock-"):
        return f"/model/{quote(model, safe='')}/invoke"
    return None  # openai (base path), azure (deployment, api-version), vertex (project, region)


# ---------------------------------------------------------------- request


def request(kind: str, req: Json, model: str) -> Json:
    """The client's OpenAI embeddings request as the provider's request body (``req`` is not modified)."""
    fam = family(kind, model)
    if fam == "openai":
        return {**req, "model": model}
    _check_encoding(req)
    return _REQUEST[fam](req, model)


# ---------------------------------------------------------------- response


def response(kind: str, resp: Json, model: str, req: Json) -> Json:
    """The provider's 200 body as an OpenAI embeddings list; ``req`` is the client's request."""
    as_base64 = req.get("encoding_format") == "base64"
    fam = family(kind, model)
    if fam == "openai":
        return _openai_response(resp, as_base64)
    if not isinstance(resp, dict):
        resp = {}
    # Token counts come from the usage readers; a provider that reports none gives 0 here
    # (Bedrock's Cohere and Nova bodies: the counts are in its response headers).
    found, _ = usage_of(fam + "-embeddings", resp)
    tokens = found.input_tokens if found else 0
    data = [_item(i, vec, as_base64) for i, vec in enumerate(_EXTRACT[fam](resp))]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
