"""Per-provider response, stream and error builders for the mock provider, one module per wire format.

Every builder returns ready-to-send bytes (streams: one ``bytes`` per event) so the server only writes.
Callers use ``formats.<builder>``; this package re-exports every builder of its modules.
"""

from extproc.mock.formats.anthropic import (
    MESSAGE_STOP,
    anthropic_content,
    anthropic_error,
    anthropic_event,
    anthropic_response,
    anthropic_stream,
    anthropic_stream_error,
)
from extproc.mock.formats.bedrock import (
    bedrock_error,
    bedrock_response,
    bedrock_stream,
    bedrock_stream_error,
    cohere_embeddings,
    nova_embeddings,
    titan_embedding,
)
from extproc.mock.formats.common import (
    CREATED,
    DEFAULT_EMBEDDING_DIMS,
    embedding_tokens,
    embedding_vector,
)
from extproc.mock.formats.gemini import (
    gemini_embedding,
    gemini_embeddings,
    gemini_json_array,
    gemini_response,
    gemini_sse,
    gemini_stream_error_payload,
    gemini_stream_payloads,
    google_error,
    google_error_obj,
    vertex_multimodal_embeddings,
    vertex_text_embeddings,
)
from extproc.mock.formats.openai import (
    MOCK_MODELS,
    OPENAI_DONE,
    OPENAI_MODELS,
    openai_embeddings,
    openai_error,
    openai_response,
    openai_stream,
    openai_stream_error,
    openai_usage,
)

__all__ = [
    "CREATED",
    "DEFAULT_EMBEDDING_DIMS",
    "MESSAGE_STOP",
    "MOCK_MODELS",
    "OPENAI_DONE",
    "OPENAI_MODELS",
    "anthropic_content",
    "anthropic_error",
    "anthropic_event",
    "anthropic_response",
    "anthropic_stream",
    "anthropic_stream_error",
    "bedrock_error",
    "bedrock_response",
    "bedrock_stream",
    "bedrock_stream_error",
    "cohere_embeddings",
    "embedding_tokens",
    "embedding_vector",
    "gemini_embedding",
    "gemini_embeddings",
    "gemini_json_array",
    "gemini_response",
    "gemini_sse",
    "gemini_stream_error_payload",
    "gemini_stream_payloads",
    "google_error",
    "google_error_obj",
    "nova_embeddings",
    "openai_embeddings",
    "openai_error",
    "openai_response",
    "openai_stream",
    "openai_stream_error",
    "openai_usage",
    "titan_embedding",
    "vertex_multimodal_embeddings",
    "vertex_text_embeddings",
]
