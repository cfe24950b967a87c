"""OpenAI chat.completions <-> Gemini generateContent (AI Studio and Vertex share the body): the request.

The answer is read in ``gemini_response`` (bodies and errors) and ``gemini_stream``
(``alt=sse``); their public names are importable from here too.
"""

from __future__ import annotations

from typing import Any

from . import common as c
from .base import Json, TranslationError
from .fields import CHAT_IGNORED, CHAT_OPENAI_ONLY, FieldTable
from .gemini_response import FINISH_REASONS, chat_response, error_response
from .gemini_stream import ChatStream

__all__ = [
    "FINISH_REASONS",
    "REQUEST_FIELDS",
    "ChatStream",
    "chat_request",
    "chat_response",
    "error_response",
    "gemini_schema",
]

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
