"""Gemini ``alt=sse`` stream -> OpenAI chunks: ``ChatStream``."""

from __future__ import annotations

from . import common as c
from .base import Json, openai_error_type
from .gemini_response import _finish, _usage
from .sse import DONE, JSONEventTranslator, error_frame, truncated_frames
from .usage import Usage, from_gemini

# ---------------------------------------------------------------- stream


class _Candidate:
    __slots__ = ("finished", "tools")

    def __init__(self) -> None:
        self.tools = 0
        self.finished = False


class ChatStream(JSONEventTranslator):
    """Gemini ``alt=sse`` stream -> OpenAI chat.completion.chunk SSE.

    Gemini sends no end marker, so usage and ``[DONE]`` go out from ``finish()``.
    ``usage`` is the last ``usageMetadata`` seen (each chunk carries running totals)
    and ``response_model`` the last ``modelVersion``; None until the stream says.
    """

    def __init__(self, model: str, include_usage: bool, created: int = 0) -> None:
        super().__init__()
        self.response_model: str | None = None
        self._out = c.ChunkWriter(c.new_id(), model, created, include_usage)
        self._meta: Json | None = None
        self._candidates: dict[int, _Candidate] = {}
        self._id_set = False

    @property
    def usage(self) -> Usage | None:
        return from_gemini(self._meta)

    def _ended(self) -> bytes:
        self._done = True
        if not any(cand.finished for cand in self._candidates.values()):
            return truncated_frames()
        if self._out.include_usage and self._meta is not None:
            return self._out.usage_chunk(_usage(self._meta)) + DONE
        return DONE

    def _event(self, data: Json) -> bytes:
        """One ``GenerateContentResponse`` (each event is a whole one)."""
        err = data.get("error")
        if isinstance(err, dict):
            self._done = True
            status = err.get("code") if isinstance(err.get("code"), int) else 500
            message = err.get("message") or "upstream error"
            return error_frame(message, openai_error_type(status), err.get("status")) + DONE
        if not self._id_set and data.get("responseId"):
            self._out.id, self._id_set = data["responseId"], True
        if isinstance(data.get("modelVersion"), str) and data["modelVersion"]:
            self.response_model = self._out.model = data["modelVersion"]
        meta = data.get("usageMetadata")
        if isinstance(meta, dict):  # each chunk carries the running totals
            self._meta = {k: v for k, v in meta.items() if isinstance(v, int)}
        out = bytearray()
        candidates = data.get("candidates") or ()
        for position, cand in enumerate(candidates):
            if isinstance(cand, dict):
                out += self._candidate(cand.get("index", position), cand)
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            out += self._candidate(0, {"finishReason": "SAFETY"})
        return bytes(out)

    def _candidate(self, index: int, cand: Json) -> bytes:
        out = bytearray()
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _Candidate()
            out += self._out.chunk({"role": "assistant", "content": ""}, index)
        for part in (cand.get("content") or {}).get("parts") or ():
            fn = part.get("functionCall") if isinstance(part, dict) else None
            if isinstance(fn, dict):
                call = c.tool_call(fn.get("id") or c.new_id("call_"), fn.get("name"), fn.get("args"))
                call["index"] = state.tools
                state.tools += 1
                out += self._out.chunk({"tool_calls": [call]}, index)
            elif isinstance(part, dict) and part.get("text"):
                key = "reasoning_content" if part.get("thought") else "content"
                out += self._out.chunk({key: part["text"]}, index)
        finish = _finish(cand.get("finishReason"), state.tools > 0)
        if finish and not state.finished:
            state.finished = True
            out += self._out.chunk({}, index, finish)
        return bytes(out)
