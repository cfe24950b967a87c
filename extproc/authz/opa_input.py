"""OPA's ``input``, exactly as opa-envoy-plugin builds it from the CheckRequest, so a policy
written for opa-envoy-plugin runs here unchanged.

The plugin (``envoyauth/request.go``, ``protomap.go``) maps the whole CheckRequest by the fields'
JSON (lowerCamelCase) names, set fields only, scalars as their values: int64 ``size`` a number,
``time`` a ``{"seconds", "nanos"}`` object (the plugin's reflection walk, not protojson's
string), enums their numbers, bytes base64, ``Struct`` metadata plain objects. It then adds
``version``, ``parsed_path``, ``parsed_query``, ``parsed_body``, ``truncated_body`` and
``source_principal``.

One choice of ours: Envoy sends this gateway the body as raw bytes (``pack_as_bytes``), which the
plugin would show as base64 ``rawBody``. Most opa-envoy-plugin deployments do not set
``pack_as_bytes`` and their policies read ``input.attributes.request.http.body`` as text, so a
body that is valid UTF-8 is shown as ``body``; any other stays ``rawBody`` (base64).

And one addition: when the gateway's ``jwtAuth`` verified the caller's token, its claims are at
``attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].jwt_payload``, where
Envoy's jwt_authn filter puts them (``payload_in_metadata: jwt_payload``). Policies written for
that setup work here; and no client can set it.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from extproc.authz.caller import Caller
from extproc.authz.request import AuthRequest

VERSION = {"encoding": "protojson", "ext_authz": "v3"}
JWT_AUTHN = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "jwt_payload"

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class InputError(ValueError):
    """The request cannot be put into opa-envoy-plugin's input (it answers 400 to these)."""


def protomap(msg: Message) -> dict[str, Any]:
    """A message as opa-envoy-plugin's ``protomap``: JSON names, set fields, plain values."""
    if isinstance(msg, Struct):
        return MessageToDict(msg)
    plan = _plans.get(msg.DESCRIPTOR.full_name) or _plan(msg.DESCRIPTOR)
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        name, kind = plan[fd.number]
        if kind == _SCALAR:
            out[name] = value  # enums stay numbers, as the plugin's value.Interface()
        elif kind == _MESSAGE:
            out[name] = protomap(value)
        elif kind == _STR_MAP:
            out[name] = dict(value)
        elif kind == _MAP:
            out[name] = {str(k): _one(fd.message_type.fields_by_name["value"], v) for k, v in value.items()}
        elif kind == _LIST:
            out[name] = [_one(fd, v) for v in value]
        else:
            out[name] = _one(fd, value)
    return out


# How each field is mapped, worked out once per message type (the walk runs on every check).
_SCALAR, _MESSAGE, _STR_MAP, _MAP, _LIST, _BYTES = range(6)
_plans: dict[str, dict[int, tuple[str, int]]] = {}


def _plan(descriptor: Any) -> dict[int, tuple[str, int]]:
    plan: dict[int, tuple[str, int]] = {}
    for fd in descriptor.fields:
        entry = fd.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            plain = key.type == FieldDescriptor.TYPE_STRING and value.type == FieldDescriptor.TYPE_STRING
            kind = _STR_MAP if plain else _MAP
        elif fd.is_repeated:
            kind = _LIST
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            kind = _MESSAGE
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            kind = _BYTES
        else:
            kind = _SCALAR
        plan[fd.number] = (fd.json_name, kind)
    _plans[descriptor.full_name] = plan
    return plan


def _one(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return protomap(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()  # what JSON makes of Go's []byte
    return value


def input_document(req: AuthRequest, caller: Caller | None = None) -> dict[str, Any]:
    doc = protomap(req.check)
    http = doc.setdefault("attributes", {}).setdefault("request", {}).setdefault("http", {})
    raw = req.check.attributes.request.http.raw_body
    text = _as_text(raw) if raw else None
    if text is not None:
        http.pop("rawBody", None)
        http["body"] = text
    if caller is not None and caller.method == "jwt" and caller.claims:
        meta = doc["attributes"].setdefault("metadataContext", {}).setdefault("filterMetadata", {})
        meta[JWT_AUTHN] = {JWT_PAYLOAD: caller.claims}
    doc["version"] = dict(VERSION)
    doc["parsed_path"], doc["parsed_query"] = parsed_path_and_query(req.path)
    body = http.get("body", "")
    doc["parsed_body"], doc["truncated_body"] = parsed_body(req.headers, body, raw)
    principal = req.check.attributes.source.principal
    if principal:
        doc["source_principal"] = principal
    return doc


def _as_text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unescape(text: str, *, plus: bool) -> str:
    # Go's url.PathUnescape / QueryUnescape refuse a "%" without two hex digits.
    if _BAD_ESCAPE.search(text):
        raise InputError(f"invalid URL escape in {text[:64]!r}")
    if plus:
        text = text.replace("+", " ")
    return unquote_to_bytes(text).decode("utf-8", "replace")


def parsed_path_and_query(path: str) -> tuple[list[str], dict[str, list[str]]]:
    raw_path, _, raw_query = path.partition("?")
    parsed_path = _unescape(raw_path, plus=False).lstrip("/").split("/")
    query: dict[str, list[str]] = {}
    for pair in raw_query.split("&") if raw_query else []:
        if not pair:
            continue
        if ";" in pair:  # Go's url.ParseQuery (since 1.17)
            raise InputError("invalid semicolon separator in query")
        key, _, value = pair.partition("=")
        query.setdefault(_unescape(key, plus=True), []).append(_unescape(value, plus=True))
    return parsed_path, query


def parsed_body(headers: dict[str, str], body: str, raw: bytes) -> tuple[Any, bool]:
    """``parsed_body`` and ``truncated_body``: JSON, form and multipart bodies, by content type."""
    if headers.get("x-envoy-auth-partial-body") == "true":
        return None, True
    content_type = headers.get("content-type")
    if content_type is None:
        return None, False
    payload = body.encode() if body else raw
    kind = next((k for k in _PARSERS if k in content_type), None)
    if kind is None or not payload:
        return None, False
    length = headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InputError("invalid content-length") from None
        if declared != -1 and declared > len(payload):
            return None, True
    return _PARSERS[kind](payload, content_type), False


def _json(payload: bytes, _content_type: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InputError("the request body is not valid JSON") from None


def _form(payload: bytes, _content_type: str) -> dict[str, list[str]]:
    text = payload.decode("utf-8", "replace")
    if ";" in text:
        raise InputError("invalid semicolon separator in form body")
    return parse_qs(text, keep_blank_values=True)


def _multipart(payload: bytes, content_type: str) -> dict[str, list[Any]] | None:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + payload)
    if not message.is_multipart() or message.get_boundary() is None:
        return None
    values: dict[str, list[Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        if "application/json" in part.get("content-type", ""):
            values.setdefault(str(name), []).append(_json(data, ""))
        else:
            values.setdefault(str(name), []).append(data.decode("utf-8", "replace"))
    return values


# The plugin's order: the first whose name the content type contains wins (gRPC bodies need a
# descriptor set the plugin is rarely given; this gateway parses none, like the plugin without one).
_PARSERS = {
    "application/json": _json,
    "application/x-www-form-urlencoded": _form,
    "multipart/form-data": _multipart,
}


def dumps(doc: dict[str, Any]) -> str:
    """The document as the JSON text the engines take."""
    return orjson.dumps(doc).decode()
