"""Reduce each provider's chat request body to a dialect-neutral :class:`Conversation`.

Parsers are lenient about shapes they do not understand (the mock must not crash on new fields); strict
validation that real providers perform (e.g. Anthropic ``max_tokens``) lives in ``server``.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.mock.conversation import JSON, Conversation, Tool


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _get(obj: JSON, camel: str, snake: str) -> Any:
    """Google's JSON mapping accepts both lowerCamel and snake_case field names."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --- OpenAI / Azure -----------------------------------------------------------------------------------


def _openai_content(content: Any) -> tuple[list[str], int]:
    if isinstance(content, str):
        return [content], 0
    texts: list[str] = []
    images = 0
    for part in _as_list(content):
        part = _as_dict(part)
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image"):
            images += 1
    return texts, images


def _openai_tool_choice(conv: Conversation, choice: Any) -> None:
    if choice in ("none", "auto", "required"):
        conv.tool_mode = choice
    elif isinstance(choice, dict):
        name = _as_dict(choice.get("function")).get("name") or choice.get("name")
        if isinstance(name, str):
            conv.tool_mode, conv.tool_name = "named", name


def parse_openai(body: JSON, default_model: str = "") -> Conversation:
    conv = Conversation(model=str(body.get("model") or default_model))
    messages = [_as_dict(m) for m in _as_list(body.get("messages"))]
    per_message: list[list[str]] = []
    for msg in messages:
        texts, images = _openai_content(msg.get("content"))
        per_message.append(texts)
        conv.texts.extend(texts)
        conv.images += images
    _openai_last_turn(conv, messages, per_message)
    for tool in _as_list(body.get("tools")):
        fn = _as_dict(_as_dict(tool).get("function"))
        if isinstance(fn.get("name"), str):
            conv.tools.append(Tool(fn["name"], _as_dict(fn.get("parameters"))))
    _openai_tool_choice(conv, body.get("tool_choice"))
    conv.parallel = body.get("parallel_tool_calls") is not False
    conv.max_tokens = _positive_int(body.get("max_completion_tokens")) or _positive_int(
        body.get("max_tokens")
    )
    conv.stream = body.get("stream") is True
    conv.include_usage = _as_dict(body.get("stream_options")).get("include_usage") is True
    return conv


def _openai_last_turn(conv: Conversation, messages: list[JSON], per_message: list[list[str]]) -> None:
    results: list[str] = []
    for msg, texts in zip(reversed(messages), reversed(per_message), strict=True):
        if msg.get("role") not in ("tool", "function"):
            break
        results[:0] = [" ".join(texts)]  # keep original order of parallel tool results
    if results:
        conv.tool_result = "; ".join(results)
    elif messages and messages[-1].get("role") == "user":
        conv.last_is_user = True
    for msg, texts in zip(reversed(messages), reversed(per_message), strict=True):
        if msg.get("role") == "user":
            conv.last_user_text = " ".join(texts)
            break


# --- Anthropic ----------------------------------------------------------------------------------------


def _anthropic_blocks(content: Any) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [_as_dict(b) for b in _as_list(content)]


def _anthropic_texts(conv: Conversation, blocks: list[JSON]) -> tuple[list[str], list[str]]:
    """Return (plain texts, tool-result texts) of one message, counting images and input text."""
    texts: list[str] = []
    results: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "image":
            conv.images += 1
        elif kind == "tool_result":
            inner, _ = _anthropic_texts(conv, _anthropic_blocks(block.get("content")))
            results.append(" ".join(inner))
    conv.texts.extend(texts)
    conv.texts.extend(results)
    return texts, results


def _anthropic_tool_choice(conv: Conversation, choice: JSON) -> None:
    kind = choice.get("type")
    if kind in ("auto", "none"):
        conv.tool_mode = kind
    elif kind == "any":
        conv.tool_mode = "required"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        conv.tool_mode, conv.tool_name = "named", choice["name"]
    conv.parallel = choice.get("disable_parallel_tool_use") is not True


def parse_anthropic(body: JSON, default_model: str = "") -> Conversation:
    conv = Conversation(model=str(body.get("model") or default_model))
    system = body.get("system")
    for block in _anthropic_blocks(system):
        conv.add_text(block.get("text"))
    messages = [_as_dict(m) for m in _as_list(body.get("messages"))]
    for index, msg in enumerate(messages):
        texts, results = _anthropic_texts(conv, _anthropic_blocks(msg.get("content")))
        if msg.get("role") == "user" and texts:
            conv.last_user_text = " ".join(texts)
        if index == len(messages) - 1 and msg.get("role") == "user":
            if results:
                conv.tool_result = "; ".join(results)
            else:
                conv.last_is_user = True
    for tool in _as_list(body.get("tools")):
        tool = _as_dict(tool)
        # Server tools (web_search, bash, ...) carry no input_schema; the mock only calls client tools.
        if isinstance(tool.get("name"), str) and "input_schema" in tool:
            conv.tools.append(Tool(tool["name"], _as_dict(tool.get("input_schema"))))
    _anthropic_tool_choice(conv, _as_dict(body.get("tool_choice")))
    conv.max_tokens = _positive_int(body.get("max_tokens"))
    conv.stream = body.get("stream") is True
    return conv


# --- Gemini / Vertex Gemini ---------------------------------------------------------------------------


def _is_image(part: JSON) -> bool:
    blob = _as_dict(_get(part, "inlineData", "inline_data") or _get(part, "fileData", "file_data"))
    mime = _get(blob, "mimeType", "mime_type")
    return isinstance(mime, str) and mime.startswith("image/")


def _function_response_text(part: JSON) -> str | None:
    resp = _get(part, "functionResponse", "function_response")
    if not isinstance(resp, dict):
        return None
    payload = resp.get("response")
    # A single string field (e.g. {"content": "rainy"}) is the tool's text; otherwise show the JSON.
    if isinstance(payload, dict) and len(payload) == 1:
        (only,) = payload.values()
        if isinstance(only, str):
            return only
    return _stringify(payload)


def _gemini_parts(conv: Conversation, parts: Any) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    results: list[str] = []
    for part in _as_list(parts):
        part = _as_dict(part)
        if isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
        elif _is_image(part):
            conv.images += 1
        else:
            result = _function_response_text(part)
            if result is not None:
                results.append(result)
    conv.texts.extend(texts)
    conv.texts.extend(results)
    return texts, results


def _gemini_tool_config(conv: Conversation, body: JSON) -> None:
    config = _as_dict(
        _get(
            _as_dict(_get(body, "toolConfig", "tool_config")),
            "functionCallingConfig",
            "function_calling_config",
        )
    )
    mode = str(config.get("mode") or "AUTO").upper()
    allowed = _as_list(_get(config, "allowedFunctionNames", "allowed_function_names"))
    if mode == "NONE":
        conv.tool_mode = "none"
    elif mode == "ANY":
        conv.tool_mode = "required"
        if allowed and isinstance(allowed[0], str):
            conv.tool_mode, conv.tool_name = "named", allowed[0]


def parse_gemini(body: JSON, model: str) -> Conversation:
    conv = Conversation(model=model)
    _gemini_parts(conv, _as_dict(_get(body, "systemInstruction", "system_instruction")).get("parts"))
    contents = [_as_dict(c) for c in _as_list(body.get("contents"))]
    for index, content in enumerate(contents):
        texts, results = _gemini_parts(conv, content.get("parts"))
        is_user = content.get("role", "user") in ("user", "function")
        if is_user and texts:
            conv.last_user_text = " ".join(texts)
        if index == len(contents) - 1 and is_user:
            if results:
                conv.tool_result = "; ".join(results)
            else:
                conv.last_is_user = True
    for tool in _as_list(body.get("tools")):
        for decl in _as_list(_get(_as_dict(tool), "functionDeclarations", "function_declarations")):
            decl = _as_dict(decl)
            schema = decl.get("parameters") or _get(decl, "parametersJsonSchema", "parameters_json_schema")
            if isinstance(decl.get("name"), str):
                conv.tools.append(Tool(decl["name"], _as_dict(schema)))
    _gemini_tool_config(conv, body)
    gen = _as_dict(_get(body, "generationConfig", "generation_config"))
    conv.max_tokens = _positive_int(_get(gen, "maxOutputTokens", "max_output_tokens"))
    return conv


# --- Bedrock Converse ---------------------------------------------------------------------------------


def _bedrock_result_text(result: JSON) -> str:
    pieces: list[str] = []
    for item in _as_list(result.get("content")):
        item = _as_dict(item)
        if "text" in item:
            pieces.append(_stringify(item["text"]))
        elif "json" in item:
            pieces.append(_stringify(item["json"]))
    return " ".join(pieces)


def _bedrock_blocks(conv: Conversation, content: Any) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    results: list[str] = []
    for block in _as_list(content):
        block = _as_dict(block)
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif "image" in block:
            conv.images += 1
        elif isinstance(block.get("toolResult"), dict):
            results.append(_bedrock_result_text(block["toolResult"]))
    conv.texts.extend(texts)
    conv.texts.extend(results)
    return texts, results


def _bedrock_tools(conv: Conversation, config: JSON) -> None:
    for tool in _as_list(config.get("tools")):
        spec = _as_dict(_as_dict(tool).get("toolSpec"))
        if isinstance(spec.get("name"), str):
            conv.tools.append(Tool(spec["name"], _as_dict(_as_dict(spec.get("inputSchema")).get("json"))))
    choice = _as_dict(config.get("toolChoice"))
    if "any" in choice:
        conv.tool_mode = "required"
    elif isinstance(_as_dict(choice.get("tool")).get("name"), str):
        conv.tool_mode, conv.tool_name = "named", choice["tool"]["name"]


def parse_bedrock(body: JSON, model: str) -> Conversation:
    conv = Conversation(model=model)
    for block in _as_list(body.get("system")):
        conv.add_text(_as_dict(block).get("text"))
    messages = [_as_dict(m) for m in _as_list(body.get("messages"))]
    for index, msg in enumerate(messages):
        texts, results = _bedrock_blocks(conv, msg.get("content"))
        if msg.get("role") == "user" and texts:
            conv.last_user_text = " ".join(texts)
        if index == len(messages) - 1 and msg.get("role") == "user":
            if results:
                conv.tool_result = "; ".join(results)
            else:
                conv.last_is_user = True
    _bedrock_tools(conv, _as_dict(body.get("toolConfig")))
    conv.max_tokens = _positive_int(_as_dict(body.get("inferenceConfig")).get("maxTokens"))
    return conv
