"""OpenAI embeddings requests, as OpenAI's API reference documents them, with the extensions
the translators read for other providers (``extproc.translate.embeddings``)."""

from __future__ import annotations

from typing import Any, Required

from typing_extensions import TypedDict

from .shared import Model, strict

# One text, several texts, one token array or several (OpenAI's tokenizer only).
Input = str | list[str] | list[int] | list[list[int]]


@strict
class EmbeddingsRequest(TypedDict, total=False):
    model: Model | None
    input: Required[Input]
    encoding_format: str | None
    dimensions: int | None
    user: str | None
    task_type: str | None
    title: str | None
    input_type: str | None
    auto_truncate: bool | None
    normalize: bool | None


SHAPE: Any = EmbeddingsRequest
