"""OpenAI chat.completions <-> Gemini generateContent (AI Studio and Vertex share the body)."""

from __future__ import annotations

from typing import Any

import orjson

from . import common as c
from .base import Json, TranslationError, openai_error, openai_error_type
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, FieldTable
from .sse import DONE, SSEEvent, SSETranslator, error_frame, malformed_frames
from .usage import Usage, from_gemini

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# Fields of Gemini's OpenAPI-subset Schema; other JSON-Schema keywords are rejected
# by the API, so they are dropped (which only loosens validation).
_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
        "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
        "minimum", "maximum", "example", "default", "anyOf", "propertyOrdering",
    }
)  # fmt: skip
_MAX_SCHEMA_DEPTH = 64

# The chat.completions fields carried to generateContent, dropped (see CHAT_IGNORED for
# why), or refused unless they hold their no-op value (see fields.py).
REQUEST_FIELDS = FieldTable(
    provider="Gemini",
    mapped=frozenset(
        {
            "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
            "top_k", "frequency_penalty", "presence_penalty", "seed", "stop", "tools",
            "tool_choice", "response_format", "reasoning_effort",
            "n",  # -> candidateCount
            "stream",  # the path: streamGenerateContent
        }
    ),
    ignored={**CHAT_IGNORED, "user": "Gemini has no end-user field; the id tracks abuse, not the answer"},
    unsupported={
        # Gemini can return logprobs, but its answer is not translated back with them.
        **CHAT_OPENAI_ONLY,
        "parallel_tool_calls": True,  # Gemini cannot be told to call one tool at a time
    },
)  # fmt: skip


# ---------------------------------------------------------------- request


def chat_request(req: Json, model: str) -> Json:
    REQUEST_FIELDS.check(req)
    system, contents = _convert_messages(req.get("messages") or [])
    body: Json = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": s} for s in system]}
    _add_tools(req, body)
    gen = _generation_config(req)
    if gen:
        body["generationConfig"] = gen
    return body


def _convert_messages(messages: list[Json]) -> tuple[list[str], list[Json]]:
    system: list[str] = []
    contents: list[Json] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(c.text_content(msg.get("content")))
        elif role == "user":
            c.append_turn(contents, "user", _user_parts(msg.get("content")), "parts")
        elif role == "assistant":
            c.append_turn(contents, "model", _model_parts(msg, call_names), "parts")
        elif role == "tool":
            c.append_turn(contents, "user", [_function_response(msg, call_names)], "parts")
        else:
            raise TranslationError(f"unsupported message role {role!r}", "messages")
    return system, contents


def _user_parts(content: Any) -> list[Json]:
    parts: list[Json] = []
    for part in c.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):  # Gemini rejects empty text parts
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_media_part(c.image_url(part)))
        elif kind == "file":
            mime, data, _ = c.file_data(part)
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = "audio/" + (audio.get("format") or "wav")
            parts.append({"inlineData": {"mimeType": mime, "data": audio.get("data") or ""}})
        else:
            raise TranslationError(f"content part {kind!r} is not supported by Gemini", "messages")
    return parts


def _media_part(url: str) -> Json:
    inline = c.parse_data_url(url)
    if inline:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    return {"fileData": {"mimeType": c.guess_mime(url), "fileUri": url}}


def _model_parts(msg: Json, call_names: dict[str, str]) -> list[Json]:
    parts: list[Json] = []
    text = c.text_content(msg.get("content"))
    if text:
        parts.append({"text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        if call.get("id"):
            call_names[call["id"]] = name
        parts.append({"functionCall": {"name": name, "args": c.parse_arguments(fn.get("arguments"))}})
    return parts


def _function_response(msg: Json, call_names: dict[str, str]) -> Json:
    name = call_names.get(msg.get("tool_call_id") or "") or msg.get("name")
    if not name:
        raise TranslationError("tool message does not match an earlier tool call", "messages")
    return {"functionResponse": {"name": name, "response": {"content": c.text_content(msg.get("content"))}}}


def _add_tools(req: Json, body: Json) -> None:
    functions = c.function_tools(req)
    if functions:
        body["tools"] = [{"functionDeclarations": [_declaration(fn) for fn in functions]}]
    choice = c.tool_choice(req)
    if choice is None:
        return
    mode, name = choice
    config: Json = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[mode]}
    if name:
        config["allowedFunctionNames"] = [name]
    body["toolConfig"] = {"functionCallingConfig": config}


def _declaration(fn: Json) -> Json:
    decl: Json = {"name": fn.get("name")}
    if fn.get("description"):
        decl["description"] = fn["description"]
    params = fn.get("parameters")
    if params:
        schema = gemini_schema(params)
        # Gemini rejects an OBJECT schema without properties; no parameters says the same.
        if schema.get("type") != "object" or schema.get("properties"):
            decl["parameters"] = schema
    return decl


def gemini_schema(schema: Json) -> Json:
    """A JSON Schema as Gemini's Schema: local ``$ref``s inlined, unknown keywords dropped."""
    if not isinstance(schema, dict):
        raise TranslationError("a JSON schema must be an object", "tools")
    defs: Json = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key) or {}
        if not isinstance(found, dict):
            raise TranslationError(f"the schema's {key!r} must be an object", "tools")
        defs.update(found)
    return _clean_schema(schema, defs, 0)


def _clean_schema(schema: Any, defs: Json, depth: int) -> Any:
    if not isinstance(schema, dict):
        return schema
    if depth > _MAX_SCHEMA_DEPTH:
        raise TranslationError("JSON schema is too deep or recursive for Gemini", "response_format")
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1]) if ref.startswith(("#/$defs/", "#/definitions/")) else None
        if target is None:
            raise TranslationError(f"cannot resolve schema reference {ref!r}", "response_format")
        return _clean_schema(target, defs, depth + 1)
    out: Json = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key not in _SCHEMA_KEYS:
            continue
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean_schema(sub, defs, depth + 1) for name, sub in value.items()}
        elif key == "items":
            out[key] = _clean_schema(value, defs, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [_clean_schema(sub, defs, depth + 1) for sub in value]
        elif key == "type" and isinstance(value, list):
            # ["string", "null"] is Gemini's nullable string.
            types = [t for t in value if t != "null"]
            if len(types) < len(value):
                out["nullable"] = True
            if types:
                out["type"] = types[0]
        else:
            out[key] = value
    return out


def _generation_config(req: Json) -> Json:
    gen: Json = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("frequency_penalty", "frequencyPenalty"),
        ("presence_penalty", "presencePenalty"),
        ("n", "candidateCount"),
        ("seed", "seed"),
    ):
        if req.get(src) is not None:
            gen[dst] = req[src]
    limit = c.max_tokens(req)
    if limit is not None:
        gen["maxOutputTokens"] = limit
    stop = c.stop_sequences(req)
    if stop:
        gen["stopSequences"] = stop
    fmt = c.response_format(req)
    if fmt is not None:
        gen["responseMimeType"] = "application/json"
        schema = (fmt[1] or {}).get("schema")
        if schema:
            gen["responseSchema"] = gemini_schema(schema)
    budget = c.reasoning_budget(req)
    if budget is not None:
        gen["thinkingConfig"] = (
            {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
        )
    return gen


# ---------------------------------------------------------------- response


def _finish(reason: str | None, has_tools: bool) -> str | None:
    if not reason:
        return None
    if reason == "STOP" and has_tools:
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def chat_response(resp: Json, model: str, *, created: int = 0) -> Json:
    choices = [_choice(cand, i) for i, cand in enumerate(resp.get("candidates") or ())]
    if not choices:
        # No candidates: the prompt itself was blocked.
        blocked = (resp.get("promptFeedback") or {}).get("blockReason")
        choices = [c.choice(0, "", [], "content_filter" if blocked else "stop")]
    usage = _usage(resp.get("usageMetadata") or {})
    return c.completion(
        resp.get("responseId") or c.new_id(), resp.get("modelVersion") or model, created, choices, usage
    )


def _choice(cand: Json, position: int) -> Json:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for part in (cand.get("content") or {}).get("parts") or ():
        fn = part.get("functionCall")
        if isinstance(fn, dict):
            calls.append(c.tool_call(fn.get("id") or c.new_id("call_"), fn.get("name"), fn.get("args")))
        elif "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
    finish = _finish(cand.get("finishReason"), bool(calls)) or "stop"
    text = "".join(texts) if texts else None
    return c.choice(cand.get("index", position), text, calls, finish, "".join(thoughts) if thoughts else None)


def _usage(meta: Any) -> Json:
    # Tool-use prompt tokens are input too; thoughts are billed as output (see usage.from_gemini).
    usage = from_gemini(meta) or Usage()
    thought = isinstance(meta, dict) and meta.get("thoughtsTokenCount") is not None
    return c.make_usage(
        usage.input_tokens,
        usage.output_tokens,
        cached=usage.cache_read_tokens,
        reasoning=usage.reasoning_tokens if thought else None,
    )


def error_response(status: int, body: bytes) -> tuple[int, Json]:
    parsed = c.load_json(body)
    if isinstance(parsed, list) and parsed:  # the JSON-array stream form wraps errors in a list
        parsed = parsed[0]
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and err.get("message"):
        code = err.get("status") or err.get("code")
        return status, openai_error(str(err["message"]), openai_error_type(status), code)
    return status, openai_error(c.body_text(status, body), openai_error_type(status))


# ---------------------------------------------------------------- stream


class _Candidate:
    __slots__ = ("finished", "tools")

    def __init__(self) -> None:
        self.tools = 0
        self.finished = False


class ChatStream(SSETranslator):
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
        self._done = False

    @property
    def usage(self) -> Usage | None:
        return from_gemini(self._meta)

    @property
    def closed(self) -> bool:
        return self._done

    def _ended(self) -> bytes:
        self._done = True
        if not any(cand.finished for cand in self._candidates.values()):
            return error_frame("upstream stream ended early", "server_error", "stream_truncated") + DONE
        if self._out.include_usage and self._meta is not None:
            return self._out.usage_chunk(_usage(self._meta)) + DONE
        return DONE

    def _events(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._done:
                break
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            try:
                out += self._response(data)
            except (AttributeError, TypeError, KeyError, ValueError):
                self._done = True  # a field of the wrong type: the upstream broke the protocol
                out += malformed_frames()
        return bytes(out)

    def _response(self, data: Json) -> bytes:
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
