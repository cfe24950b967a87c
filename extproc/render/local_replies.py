"""Envoy's own replies (a sidecar frozen or down, a provider unreachable, timeouts, overflow, no
route, a body too large) as the client API's error JSON, and the access log.

A local reply is anything Envoy answers without a provider's response. Three kinds exist here:

- the gateway's own answers from the extproc sidecar (ImmediateResponse, details ``gateway_*``)
  and an authz denial (details ``ext_authz_denied``): they carry their JSON already, kept as is;
- a sidecar that failed (``ext_proc_error_*``: down, frozen past the message timeout, a gRPC
  error; ``ext_authz_error``): a JSON 503 "retry later" in the client's shape. Envoy answers a
  frozen ext_proc with 504, rewritten to 503: nothing upstream timed out, the gateway itself
  is unavailable, as when the sidecar is down;
- Envoy's own (response flags, the buffer filter's 413, the request timeouts' 408): words per
  case, in the client's shape.

Messages and codes are fixed words a client can act on, never Envoy's details
(``ext_proc_error_gRPC_error_14{...}``): the access log keeps those (``details``, ``flags``).
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc.gateway import Gateway
from extproc.headers import API, CLIENT_ID, METADATA_NAMESPACE
from extproc.render import ratelimit
from extproc.render.common import Json, typed
from extproc.translate import messages_common
from extproc.translate.base import openai_error_type

# One JSON object per line: Envoy's json_format escapes every value, so nothing a client sends
# (a path, an x-request-id with a quote) can add a field or a line. ``id`` is the gateway's own
# request id and ``client_id`` the client's x-request-id (the router phase records both), never
# trusted as an id; Envoy makes its own x-request-id (``envoy_id``, what providers see). ``path``
# is the client's as the router phase recorded it; ``upstream_path`` is :path as it left (the
# provider's), or the client's when the gateway answered before the body. ``client`` is the
# address Envoy trusts (use_remote_address, xffNumTrustedHops).
ACCESS_LOG_FIELDS: Json = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:path)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "route": "%ROUTE_NAME%",
    "upstream": "%UPSTREAM_HOST%",
    "upstream_path": "%PATH(NQ)%",  # without the query: an API key sent in the URL stays out of the log
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "id": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:request_id)%",
    "client_id": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{CLIENT_ID})%",
    "envoy_id": "%REQ(X-REQUEST-ID)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}


def access_log() -> list[Json]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": typed(
                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                log_format={"json_format": ACCESS_LOG_FIELDS},
            ),
        }
    ]


# --- recognising a local reply ---------------------------------------------------------------------


def _cel(expression: str) -> Json:
    """An access-log filter in CEL: the only one that reads the response code details."""
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": typed(
                "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", expression=expression
            ),
        }
    }


def _flags(*flags: str) -> Json:
    return {"response_flag_filter": {"flags": list(flags)}}


def _status(op: str, status: int) -> Json:
    runtime_key = f"gw.status.{op.lower()}.{status}"
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": status, "runtime_key": runtime_key}}
        }
    }


def _all(*filters: Json) -> Json:
    return {"and_filter": {"filters": list(filters)}}


# The gateway's own answers and authz's denials carry their own JSON; everything else is Envoy's.
_ENVOY_MADE = _cel(
    "!(response.code_details.startsWith('gateway') || response.code_details == 'ext_authz_denied')"
)


def _envoy_status(status: int) -> Json:
    return _all(_ENVOY_MADE, _status("EQ", status))


def _api_is(api: str, if_unknown: bool) -> Json:
    """The client API the router phase recorded (by now :path may be the provider's)."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": METADATA_NAMESPACE,
                "path": [{"key": API}],
                "value": {"string_match": {"exact": api}},
            },
            "match_if_key_not_found": if_unknown,
        }
    }


# Before the router phase ran (a sidecar down or frozen), the client's path tells its API, as
# client_request.api_of_path reads it: ``.../messages``, a trailing slash or a query allowed.
_MESSAGES_PATH = r"[^?]*/messages/?(\?.*)?"


def _no_api_and_messages_path() -> Json:
    path = {"name": ":path", "string_match": {"safe_regex": {"regex": _MESSAGES_PATH}}}
    # "-" is never recorded: true only when no API was.
    return _all(_api_is("-", True), {"header_filter": {"header": path}})


_ANTHROPIC_CLIENT = {"or_filter": {"filters": [_api_is("messages", False), _no_api_and_messages_path()]}}


# --- what the client reads -------------------------------------------------------------------------

RETRY = "; retry later"


@dataclass(frozen=True)
class EnvoyReply:
    """One kind of reply Envoy makes itself: how to recognise it, and what the client is told."""

    match: Json
    status: int  # what the client gets
    code: str  # OpenAI's ``code``: stable, for programs
    message: str  # for people
    rewrite_status: bool = False  # Envoy's own status is another one


def envoy_replies(gw: Gateway) -> list[EnvoyReply]:
    """In order: the first that matches answers."""
    limit = gw.limits.max_request_bytes
    too_large = f"the request body is larger than this gateway accepts (at most {limit} bytes)"
    headers, whole = gw.limit_seconds("request_headers_timeout"), gw.limit_seconds("upload_timeout")
    too_slow = (
        f"the request did not arrive in time (headers within {headers:g}s, all of it within {whole:g}s)"
    )
    # Envoy's local_ratelimit refusals read as the rate limit stage's (same type, code, message).
    rate_limited = (
        [EnvoyReply(ratelimit.is_local_rate_limited(), 429, "rate_limit_exceeded", ratelimit.MESSAGE)]
        if ratelimit.used(gw)
        else []
    )
    return [
        *rate_limited,
        EnvoyReply(
            _cel("response.code_details.startsWith('ext_proc_error')"),
            503,
            "gateway_unavailable",
            "the gateway is temporarily unavailable: its request processor did not answer" + RETRY,
            rewrite_status=True,
        ),
        EnvoyReply(
            _cel("response.code_details == 'ext_authz_error'"),
            503,
            "gateway_unavailable",
            "the gateway could not check whether this request is allowed: its authorization service "
            "is unavailable" + RETRY,
            rewrite_status=True,
        ),
        EnvoyReply(_flags("UT", "UMSDR"), 504, "provider_timeout", "the provider did not answer in time"),
        EnvoyReply(
            _flags("UF"), 503, "provider_unreachable", "the gateway could not connect to the provider"
        ),
        EnvoyReply(
            _flags("DF"), 503, "provider_unreachable", "the provider's host name could not be resolved"
        ),
        EnvoyReply(
            _flags("UC", "LR", "UR"),
            503,
            "provider_connection_closed",
            "the connection to the provider closed before it answered",
        ),
        EnvoyReply(
            _flags("UH", "NC"), 503, "no_provider_available", "no provider of this route is available" + RETRY
        ),
        EnvoyReply(
            _flags("UO"),
            503,
            "gateway_overloaded",
            "the gateway is handling as many requests to this provider as it allows" + RETRY,
        ),
        EnvoyReply(_flags("OM"), 503, "gateway_overloaded", "the gateway is overloaded" + RETRY),
        EnvoyReply(
            _flags("URX"), 503, "provider_unavailable", "every attempt to reach a provider failed" + RETRY
        ),
        EnvoyReply(_flags("UPE"), 502, "bad_upstream_response", "the provider's answer was not valid HTTP"),
        EnvoyReply(_flags("RL"), 429, "rate_limited", "too many requests" + RETRY),
        EnvoyReply(
            _flags("SI"), 408, "idle_timeout", "nothing was sent or received on this request for too long"
        ),
        EnvoyReply(_flags("NR"), 404, "route_not_found", "no route of this gateway serves this path"),
        EnvoyReply(_envoy_status(413), 413, "request_too_large", too_large),
        EnvoyReply(_envoy_status(408), 408, "request_timeout", too_slow),
        EnvoyReply(_envoy_status(400), 400, "bad_request", "the request is not HTTP this gateway accepts"),
        EnvoyReply(
            _envoy_status(431),
            431,
            "request_headers_too_large",
            "the request's headers are larger than this gateway accepts",
        ),
        EnvoyReply(
            _envoy_status(503), 503, "gateway_unavailable", "the gateway is temporarily unavailable" + RETRY
        ),
        EnvoyReply(_envoy_status(504), 504, "gateway_timeout", "the gateway did not answer in time"),
        # Any other status Envoy makes is still JSON, typed by its class (5xx first: the first
        # match answers): a 4xx is the client's to fix, a 5xx is not.
        *(
            EnvoyReply(
                _all(_ENVOY_MADE, _status("GE", low)),
                low,
                "gateway_error",
                "the gateway could not handle this request",
            )
            for low in (500, 400)
        ),
    ]


def _json_body(body: Json) -> Json:
    return {"json_format": body, "content_type": "application/json"}


def _anthropic_error(status: int, message: str) -> Json:
    error = {"type": messages_common.error_type(status), "message": message}
    return _json_body({"type": "error", "error": error})


def _openai_error(status: int, message: str, code: str) -> Json:
    error = {"message": message, "type": openai_error_type(status), "param": None, "code": code}
    return _json_body({"error": error})


def _mappers(reply: EnvoyReply) -> list[Json]:
    status = {"status_code": reply.status} if reply.rewrite_status else {}
    return [
        {
            "filter": _all(reply.match, _ANTHROPIC_CLIENT),
            **status,
            "body_format_override": _anthropic_error(reply.status, reply.message),
        },
        {
            "filter": reply.match,
            **status,
            "body_format_override": _openai_error(reply.status, reply.message, reply.code),
        },
    ]


def _rate_limited(anthropic_client: Json) -> list[Json]:
    """Envoy's local_ratelimit 429 as the stage's: the same type, code and message."""
    limited = ratelimit.is_local_rate_limited()
    return [
        {
            "filter": {"and_filter": {"filters": [limited, anthropic_client]}},
            "body_format_override": _anthropic_error(messages_common.error_type(429), ratelimit.MESSAGE),
        },
        {
            "filter": limited,
            "body_format_override": _openai_error(
                ratelimit.MESSAGE, openai_error_type(429), "rate_limit_exceeded"
            ),
        },
    ]


def local_reply_config(gw: Gateway) -> Json:
    """Envoy-made errors as the client API's error JSON (never a text body nor an empty one)."""
    return {"mappers": [m for reply in envoy_replies(gw) for m in _mappers(reply)]}
