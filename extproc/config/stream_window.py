"""``streamBatch`` and ``streamOverlap``: how every remote guard (webhook, googleModelArmor, presidio,
bedrockGuardrails) sees a streamed answer, one vocabulary for all of them.

- ``streamBatch``: characters per call to the guard's service (a window of the answer's text).
- ``streamOverlap``: characters at the end of each window that are checked again at the start of
  the next, so a finding (a phrase, an address) up to this long that falls across two windows is
  seen whole by one call. Unset: a quarter of ``streamBatch`` (agentgateway's 1 KiB windows with
  256 B overlap have that ratio). It must be less than ``streamBatch``.

extproc/guardrails/overlap.py is the one window that uses them.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from extproc.config.base import Strict

DEFAULT_BATCH = 512


class StreamWindowFields(Strict):
    stream_batch: int = Field(DEFAULT_BATCH, alias="streamBatch", ge=16)  # a call per few words at least
    stream_overlap: int | None = Field(None, alias="streamOverlap", ge=0)

    @model_validator(mode="after")
    def _window(self) -> StreamWindowFields:
        if self.overlap >= self.stream_batch:
            raise ValueError(
                f"streamOverlap ({self.overlap}) must be less than streamBatch ({self.stream_batch}): "
                "each window lets go what comes before its overlap"
            )
        return self

    @property
    def overlap(self) -> int:
        """``streamOverlap``, or a quarter of ``streamBatch`` when it is unset."""
        return self.stream_batch // 4 if self.stream_overlap is None else self.stream_overlap
