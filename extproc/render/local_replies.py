"""Envoy's own replies (no route, upstream failures, timeouts, body too large, a sidecar down)
as the client API's error JSON, and the access log line."""

from __future__ import annotations

from extproc.gateway import Gateway
from extproc.headers import API, METADATA_NAMESPACE
from extproc.render import ratelimit
from extproc.render.common import Json, typed
from extproc.translate import messages_common
from extproc.translate.base import openai_error_type

# ``id`` is the gateway's own request id (the router phase records it); ``client_id`` is the
# client's x-request-id, printed but never trusted as the id. The path is the client's as the
# router phase recorded it; ``upstream_path`` is :path as it left (the provider's), or the
# client's when the gateway answered before the body, without its query: authz refuses an API
# key sent in the URL before the router phase, and that key must not reach the log either.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %DYNAMIC_METADATA(io.llm_gateway:path)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%ms "
    "route=%ROUTE_NAME% upstream=%UPSTREAM_HOST% upstream_path=%PATH(NQ)% "
    "attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% id=%DYNAMIC_METADATA(io.llm_gateway:request_id)% "
    "client_id=%REQ(X-REQUEST-ID)%\n"
)

# Envoy's response flags for replies it generates itself (no route, upstream failures...).
# Not UAEX: an authz denial carries the sidecar's own JSON body (an OPA policy's, say), kept as
# it is; a down authz sidecar is the status-only 503 mapper below.
_ENVOY_FLAGS = [
    "NR",
    "UF",
    "UH",
    "UT",
    "URX",
    "UO",
    "UC",
    "LR",
    "UMSDR",
    "DPE",
    "UPE",
    "NC",
    "OM",
    "DF",
    "RL",
]

# The statuses Envoy's own replies use, each answered in the client API's error type.
_LOCAL_REPLY_STATUSES = (400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504)


def access_log() -> list[Json]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": typed(
                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                log_format={"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
            ),
        }
    ]


def _status_is(status: int, runtime_key: str) -> Json:
    return {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": runtime_key}}
        }
    }


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


def _no_api_and_messages_path() -> Json:
    """Before the router phase ran (sidecar down), the client's path tells its API."""
    return {
        "and_filter": {
            "filters": [
                _api_is("-", True),  # "-" is never recorded: true only when no API was
                {"header_filter": {"header": {"name": ":path", "string_match": {"suffix": "/messages"}}}},
            ]
        }
    }


def _json_body(body: Json) -> Json:
    return {"json_format": body, "content_type": "application/json"}


def _anthropic_error(type_: str, message: str) -> Json:
    return _json_body({"type": "error", "error": {"type": type_, "message": message}})


def _openai_error(message: str, type_: str, code: str) -> Json:
    return _json_body({"error": {"message": message, "type": type_, "param": None, "code": code}})


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
    """Envoy-generated errors as the client API's error JSON (never a text body)."""
    limit = gw.limits.max_request_bytes
    messages = {413: f"the request body is larger than this gateway accepts (at most {limit} bytes)"}
    envoy_made = {
        "or_filter": {
            "filters": [
                {"response_flag_filter": {"flags": _ENVOY_FLAGS}},
                _status_is(413, "gw.413"),
                _status_is(408, "gw.408"),
            ]
        }
    }
    anthropic_client = {"or_filter": {"filters": [_api_is("messages", False), _no_api_and_messages_path()]}}
    mappers = _rate_limited(anthropic_client) if ratelimit.used(gw) else []
    for status in _LOCAL_REPLY_STATUSES:
        is_status = _status_is(status, f"gw.status.{status}")
        message = messages.get(status, "%LOCAL_REPLY_BODY%")
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [envoy_made, is_status, anthropic_client]}},
                "body_format_override": _anthropic_error(messages_common.error_type(status), message),
            }
        )
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [envoy_made, is_status]}},
                "body_format_override": _openai_error(
                    message, openai_error_type(status), "%RESPONSE_CODE_DETAILS%"
                ),
            }
        )
    # A 503 with no response flag is a sidecar that failed (status_on_error): the
    # gateway's own immediate responses never use 503, and provider 503s are not local replies.
    # The gateway's own 503s (rate limit store down, identity missing) are ext_proc immediate
    # responses, already in the client's shape; their details start with "gateway_".
    sidecar_down = {"and_filter": {"filters": [_status_is(503, "gw.sidecar"), ratelimit.not_gateway_reply()]}}
    message = "the gateway is unavailable: a sidecar did not answer (%RESPONSE_CODE_DETAILS%)"
    mappers.append(
        {
            "filter": {"and_filter": {"filters": [sidecar_down, anthropic_client]}},
            "body_format_override": _anthropic_error("overloaded_error", message),
        }
    )
    mappers.append(
        {
            "filter": sidecar_down,
            "body_format_override": _openai_error(message, "service_unavailable", "gateway_unavailable"),
        }
    )
    # Any other Envoy-made status still gets JSON.
    mappers.append(
        {
            "filter": envoy_made,
            "body_format_override": _openai_error(
                "%LOCAL_REPLY_BODY%", "server_error", "%RESPONSE_CODE_DETAILS%"
            ),
        }
    )
    return {"mappers": mappers}
