"""The typed contracts between the sidecars, as strings that fit Envoy's dynamic metadata.

Dynamic metadata is a ``google.protobuf.Struct``; each contract rides in one string value (the
key is ``DECISION_KEY`` or ``IDENTITY_KEY``) as base64 of the serialized message, so a new field
needs no change here and the reader gets the message back with its types. The messages are
``llm_gateway.v1`` (protos/llm_gateway/v1/*.proto, compiled at install time).

Both directions check what a reader needs (ids present, enums known), so a value that is not
such a message is a ``ContractError`` naming the contract, never a half-filled message. Fields
a reader does not know are kept and ignored: the contracts only grow, and either side of a
sidecar pair may be upgraded first.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from google.protobuf.message import DecodeError

try:
    from llm_gateway.v1.identity_pb2 import AuthMethod, Identity
    from llm_gateway.v1.routing_pb2 import ClientApi, RouteDecision
except ModuleNotFoundError as exc:  # a checkout whose package was never installed
    raise ModuleNotFoundError(
        f"{exc.name} is generated from protos/ when the package is installed: run `make venv` "
        "(or `pip install -e .`) again after a fresh clone or an edit to a .proto"
    ) from exc

__all__ = [
    "DECISION_KEY",
    "IDENTITY_KEY",
    "AuthMethod",
    "ClientApi",
    "ContractError",
    "Identity",
    "RouteDecision",
    "client_api",
    "client_api_name",
    "decode_decision",
    "decode_identity",
    "encode_decision",
    "encode_identity",
]

# Keys in the gateway's metadata namespace (extproc.headers.METADATA_NAMESPACE).
DECISION_KEY = "route_decision"
IDENTITY_KEY = "identity"

# "completions" <-> CLIENT_API_COMPLETIONS, for code that names APIs by string.
_API_PREFIX = "CLIENT_API_"
_API_BY_NAME: dict[str, ClientApi.ValueType] = {
    v.name.removeprefix(_API_PREFIX).lower(): v.number
    for v in ClientApi.DESCRIPTOR.values
    if v.number != ClientApi.CLIENT_API_UNSPECIFIED
}
_API_NAME: dict[int, str] = {number: name for name, number in _API_BY_NAME.items()}
_AUTH_METHODS = frozenset(v.number for v in AuthMethod.DESCRIPTOR.values)
# Plain ints: attribute access on the generated enum wrapper costs about a microsecond each.
_NONE = AuthMethod.AUTH_METHOD_NONE
_API_KEY = AuthMethod.AUTH_METHOD_API_KEY
_JWT = AuthMethod.AUTH_METHOD_JWT

_M = TypeVar("_M", RouteDecision, Identity)


class ContractError(ValueError):
    """A contract value that cannot be written or read (the message says which and why)."""


def client_api(name: str) -> ClientApi.ValueType:
    """The enum for an API name as the router phase spells it (``"messages"``)."""
    try:
        return _API_BY_NAME[name]
    except KeyError:
        raise ContractError(f"unknown client API {name!r} (one of {', '.join(_API_BY_NAME)})") from None


def client_api_name(value: ClientApi.ValueType) -> str:
    """The API name for the enum (``"messages"``); ContractError for UNSPECIFIED or unknown."""
    try:
        return _API_NAME[value]
    except KeyError:
        raise ContractError(f"no client API for enum value {value}") from None


def _decision_problems(d: RouteDecision) -> list[str]:
    problems = []
    if not d.request_id:
        problems.append("no request_id")
    if d.client_api not in _API_NAME:  # proto3 enums accept any number on the wire
        problems.append(f"client_api {d.client_api} is not a known API")
    if not d.route_id:
        problems.append("no route_id")
    return problems


def _identity_problems(i: Identity) -> list[str]:
    method = i.auth_method
    if method not in _AUTH_METHODS:
        return [f"auth_method {method} is not a known method"]
    if method == _API_KEY and not i.api_key_id:
        return ["auth_method API_KEY without api_key_id"]
    if method == _JWT and not i.subject:
        return ["auth_method JWT without subject"]
    if method == _NONE and (i.subject or i.api_key_id):
        # Claims nobody proved: a writer bug, or another message read as an Identity.
        return ["auth_method NONE with a subject or api_key_id"]
    return []


def _encode(msg: RouteDecision | Identity, problems: list[str]) -> str:
    if problems:
        raise ContractError(f"refusing to write an invalid {msg.DESCRIPTOR.full_name}: {'; '.join(problems)}")
    return base64.b64encode(msg.SerializeToString()).decode("ascii")


def _parse(cls: type[_M], text: object) -> _M:
    name = cls.DESCRIPTOR.full_name
    # "" is allowed: it is the empty message (an anonymous Identity; a RouteDecision then
    # fails its checks like any other one without ids).
    if not isinstance(text, str):
        raise ContractError(f"{name}: expected a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise ContractError(f"{name}: not base64: {text!r:.40}") from None
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ContractError(f"{name}: not a serialized {name} ({exc})") from None
    return msg


def encode_decision(decision: RouteDecision) -> str:
    return _encode(decision, _decision_problems(decision))


def decode_decision(text: object) -> RouteDecision:
    """The RouteDecision in a metadata string value; ContractError if it is not a valid one."""
    decision = _parse(RouteDecision, text)
    if problems := _decision_problems(decision):
        raise ContractError(f"llm_gateway.v1.RouteDecision: {'; '.join(problems)}")
    return decision


def encode_identity(identity: Identity) -> str:
    return _encode(identity, _identity_problems(identity))


def decode_identity(text: object) -> Identity:
    """The Identity in a metadata string value; ContractError if it is not a valid one."""
    identity = _parse(Identity, text)
    if problems := _identity_problems(identity):
        raise ContractError(f"llm_gateway.v1.Identity: {'; '.join(problems)}")
    return identity
