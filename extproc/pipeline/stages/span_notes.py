"""What the chat span says of the answer that usage does not: finish reasons and response id.

Read from the answer as the client gets it (OpenAI's ``finish_reason``, Anthropic's
``stop_reason``; streamed or whole), so one pattern serves every provider behind either client
API. On routes only when tracing is on, and per chunk only for sampled exchanges.
"""

from __future__ import annotations

import re

from extproc.pipeline.exchange import Exchange
from extproc.pipeline.stage import Needs, Stage

# A string value only: OpenAI streams say "finish_reason":null until the last chunk.
_FINISH = re.compile(rb'"(?:finish_reason|stop_reason)"\s*:\s*"([^"\\]{1,64})"')
_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')
_TAIL = 96  # longer than any match
_MAX_REASONS = 16  # one per choice (n > 1): bounded whatever a provider sends


class SpanNotes(Stage):
    name = "span_notes"
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY
    changes_answer = False  # reads the answer: the client gets the provider's bytes and framing

    def on_response_chunk(self, ex: Exchange, data: bytes) -> bytes:
        tr = ex.trace
        if tr is None or not tr.sampled or not data or ex.status >= 400:
            return data
        # A field may be split between chunks: the last bytes of the previous one are read again,
        # and a match counts only if it ends in this chunk (so none counts twice).
        tail = tr.scan_tail
        window = tail + data if tail else data
        if tr.response_id is None and (m := _ID.search(window)) is not None:
            tr.response_id = m.group(1).decode("utf-8", "replace")  # the answer's own id comes first
        if b"_reason" in window:
            for m in _FINISH.finditer(window):
                if m.end() > len(tail) and len(tr.finish_reasons) < _MAX_REASONS:
                    tr.finish_reasons.append(m.group(1).decode("utf-8", "replace"))
        if ex.stream:
            tr.scan_tail = window[-_TAIL:]
        return data
