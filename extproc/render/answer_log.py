"""Envoy's part of whole answers accounted from its access log (``limits.answersFromAccessLog``).

The router phase can skip the answer's two ext_proc messages only if it knows, when it answers
the request headers (the one message whose ``mode_override`` counts), that the answer will not
stream; the flag is in the body, which comes later. So Envoy reads it first:

- ``json_to_metadata`` before the router-phase ext_proc reads the body's ``stream`` into
  ``REQUEST_FACTS`` (the buffer filter before it holds the headers for the whole body already);
  ext_proc forwards that namespace with its request headers message (bench/stream_flag_probe.py);
- on the way back the same filter reads the answer's ``model`` and ``usage`` fields into
  ``ANSWER_FACTS``: the raw provider answer, as the sidecar leaves it alone on these requests;
- the gRPC access log that carries refused requests to the sidecar (render/telemetry.py) also
  carries the requests the router phase marked ``ANSWER_LOGGED``;
- ``x-gateway-request-id`` goes on the answer from the request's metadata, as the sidecar would
  have set it.

json_to_metadata copies values, not objects, so each usage field the sidecar's readers use is
one rule (extproc/translate/usage.py: OpenAI's chat and embeddings, Anthropic's messages).
"""

from __future__ import annotations

from extproc.gateway import Gateway
from extproc.headers import (
    ANSWER_FACTS,
    ANSWER_FIELDS,
    ANSWER_LOGGED,
    METADATA_NAMESPACE,
    REQUEST_FACTS,
    REQUEST_ID,
    RESPONSE_REQUEST_ID,
    STREAM_FLAG,
)
from extproc.render.common import Json, typed


def used(gw: Gateway) -> bool:
    return bool(gw.limits.answers_from_access_log)


def facts_filter() -> Json:
    """json_to_metadata: the request's stream flag (false when absent, as the APIs default it),
    and the answer's model and usage."""

    def rule(namespace: str, key: str, path: tuple[str, ...], **extra: Json) -> Json:
        return {
            "selectors": [{"key": k} for k in path],
            "on_present": {"metadata_namespace": namespace, "key": key},
            **extra,
        }

    missing = {"on_missing": {"metadata_namespace": REQUEST_FACTS, "key": STREAM_FLAG, "value": False}}
    # JSON with a charset parameter too (Azure's answers say "application/json; charset=utf-8").
    json_types = {"allow_content_types_regex": {"regex": r"^application/json\s*(;.*)?$"}}
    return {
        "name": "envoy.filters.http.json_to_metadata",
        "typed_config": typed(
            "envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
            request_rules={
                "rules": [rule(REQUEST_FACTS, STREAM_FLAG, (STREAM_FLAG,), **missing)],
                **json_types,
            },
            response_rules={
                "rules": [rule(ANSWER_FACTS, k, path) for k, path in ANSWER_FIELDS.items()],
                **json_types,
            },
        ),
    }


def logged_filter() -> Json:
    """An access-log filter: the requests whose answers the router phase left to the log."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": METADATA_NAMESPACE,
                "path": [{"key": ANSWER_LOGGED}],
                "value": {"string_match": {"exact": "1"}},
            },
            "match_if_key_not_found": False,  # Envoy's default logs every request without the key
        }
    }


def request_id_header() -> Json:
    """The gateway's request id on every answer that has one (none: Envoy adds nothing)."""
    value = f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{REQUEST_ID})%"
    return {
        "header": {"key": RESPONSE_REQUEST_ID, "value": value},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
