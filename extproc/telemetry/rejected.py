"""Usage records for the requests the pipeline never sees: refused before ext_proc ran.

An authz denial (401, 403, a policy's own status, 503 when a policy cannot decide), a body over
``maxRequestBytes`` (413) and a path no route matches (404) are answered by Envoy or ext_authz
before the router phase opens an exchange, so no stage writes their line. Envoy's gRPC access
log (AccessLogService) sends each of those, and only those (status >= 400 and no gateway request
id in the dynamic metadata: the router phase records one with its routing decision or its error
reply, so every request with a usage record of its own has one), to this sidecar, which writes
the same JSON line the pipeline writes (``outcome: "rejected"``) and counts them in
``requests_total``. One place writes every line, with one set of field names.

The same log carries, with ``limits.answersFromAccessLog``, the requests whose whole answer the
router phase left to it (marked in the metadata): those complete their parked exchange
(extproc/pipeline/answer_log.py) and are not refused ones.

Their ``request_id`` is made here (the pipeline never made one); ``client_request_id`` is the
x-request-id Envoy's own access log prints as ``client_id``, which joins the two lines.
If this sidecar is down, Envoy's access log is the only record (the gRPC log cannot reach it).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from extproc import usage_log
from extproc.contracts import IDENTITY_KEY
from extproc.errors import GatewayError
from extproc.gateway import Gateway
from extproc.headers import ANSWER_LOGGED, AUTHZ_NAMESPACE, METADATA_NAMESPACE, REQUEST_ID
from extproc.ledger import runtime as ledger
from extproc.pipeline import answer_log
from extproc.pipeline.client_request import api_of_path
from extproc.pipeline.exchange import new_request_id
from extproc.pipeline.identity import caller_identity
from extproc.telemetry import runtime
from extproc.telemetry.fields import IDENTITY_KEYS, context, label_value
from extproc.telemetry.redact import mask, safe_headers

log = logging.getLogger("gateway.rejected")


def _seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def _identity(gw: Gateway, route_id: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> dict[str, Any]:
    """What authz established, when it wrote an identity before refusing (or allowed, then Envoy
    refused): read as the router phase reads it."""
    ns = entry.common_properties.metadata.filter_metadata.get(AUTHZ_NAMESPACE)
    value = ns.fields.get(IDENTITY_KEY) if ns is not None else None
    route = gw.routes_by_id.get(route_id)
    if value is None or route is None:
        return {}
    try:
        return caller_identity(route, value.string_value)
    except GatewayError:
        return {}


def record_of_entry(gw: Gateway, entry: accesslog_pb2.HTTPAccessLogEntry) -> tuple[dict[str, Any], dict]:
    """The usage record for one refused request, and the CEL variables it offers."""
    props = entry.common_properties
    req = entry.request
    route_id = props.route_name.split("#", 1)[0]
    route = gw.routes_by_id.get(route_id)
    status = entry.response.response_code.value
    path = req.path or req.original_path
    identity = _identity(gw, route_id, entry)
    duration = props.duration if props.HasField("duration") else props.time_to_last_downstream_tx_byte
    started = props.start_time.ToDatetime(tzinfo=datetime.UTC)
    record = {
        "type": "llm_request",
        "request_id": new_request_id(),
        "client_request_id": mask(req.request_id) if req.request_id else None,
        "timestamp": started.isoformat(timespec="milliseconds"),
        "route": route.name if route is not None else None,
        "api": api_of_path(path),
        "method": _method(req),
        "path": mask(path),
        "http_status_code": status,
        "outcome": "rejected",
        "error": entry.response.response_code_details or None,
        "provider": None,
        "provider_kind": None,
        "request_model": None,
        "response_model": None,
        "stream": False,
        "attempt_count": 0,
        "attempts": [],
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "cost_usd": None,
        "cost_status": None,
        "duration_ms": round(_seconds(duration) * 1000, 3),
        "time_to_first_byte_ms": None,
        "time_to_first_token_ms": None,
        "user_id": identity.get("user_id"),
        "api_key_id": identity.get("api_key_id"),
        "group_id": identity.get("group_id"),
        "guardrails": [],  # refused before any guardrail ran
        "budget": None,  # ... and before any budget
    }
    headers = {k.lower(): v for k, v in req.request_headers.items()}
    variables = {
        "jwt": identity.get("jwt") or {},
        "apiKey": identity.get("api_key") or {},
        "identity": {k: identity.get(k) for k in IDENTITY_KEYS},
        "llm": {"provider": None, "requestModel": None, "responseModel": None, "request_model": None},
        "request": {
            "method": record["method"],
            "path": record["path"],
            "host": req.authority,
            "headers": safe_headers(headers),
            "id": record["request_id"],
        },
        "response": {"code": status},
    }
    return record, variables


def _method(req: accesslog_pb2.HTTPRequestProperties) -> str:
    return base_pb2.RequestMethod.Name(req.request_method) if req.request_method else "GET"


def handle(gw: Gateway, entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    t = runtime.current()
    record, variables = record_of_entry(gw, entry)
    ledger.submit(record)  # refused requests are in the ledger too (no tokens, no cost)
    names = t.log_fields.variables | t.metric_fields.variables
    ctx = context({k: v for k, v in variables.items() if k in names}, t.needs) if names else None
    usage_log.write(t.log_line(record, ctx))
    extras = tuple(label_value(v) for v in t.metric_fields.evaluate(ctx).values()) if t.metric_fields else ()
    t.metrics.observe_rejected(record["route"] or "", record["api"], record["http_status_code"], extras)


def _answer_logged(entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
    ns = entry.common_properties.metadata.filter_metadata.get(METADATA_NAMESPACE)
    return ns is not None and ANSWER_LOGGED in ns.fields


def _id(entry: accesslog_pb2.HTTPAccessLogEntry) -> str:
    ns = entry.common_properties.metadata.filter_metadata[METADATA_NAMESPACE]
    return ns.fields[REQUEST_ID].string_value if REQUEST_ID in ns.fields else "a request"


class RejectedLog(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext,
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                try:
                    if _answer_logged(entry):  # a whole answer the router phase left to this log
                        if not await answer_log.PARKED.on_entry(entry):
                            log.warning("an access log entry for %s found no exchange waiting", _id(entry))
                        continue
                    handle(self.gw, entry)
                except Exception:  # one bad entry must not end the stream (Envoy would drop the rest)
                    log.exception("could not record a refused request")
        return als_pb2.StreamAccessLogsResponse()
