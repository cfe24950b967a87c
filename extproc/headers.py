"""Header names and metadata keys shared by Envoy's config and the sidecars."""

from __future__ import annotations

METADATA_NAMESPACE = "io.llm_gateway"

# The router phase tells the upstream phase what the request is through dynamic
# metadata in this namespace, not headers: Envoy keeps an attempt's header
# mutations on a retry, so anything the upstream phase removes from headers is
# gone for the next attempt, while metadata reaches every attempt unchanged. The
# sidecar reads the typed RouteDecision (extproc.contracts); these plain keys are
# for Envoy's access log and local-reply mappers.
API = "api"  # the client API: completions, messages, models, embeddings, passthrough
PATH = "path"  # the client's path after urlRewrite
REQUEST_ID = "request_id"  # the gateway-made request id (access log, upstream phase)
CLIENT_ID = "client_request_id"  # the client's own x-request-id, as it sent it (access log)

# Whole answers accounted from Envoy's access log (config.limits.answersFromAccessLog; README
# "Answers from Envoy's access log"): Envoy's json_to_metadata reads the request's ``stream``
# into REQUEST_FACTS (forwarded to the router phase with the request headers) and the answer's
# usage into ANSWER_FACTS; the router phase marks such a request with ANSWER_LOGGED.
REQUEST_FACTS = "io.llm_gateway.request"
ANSWER_FACTS = "io.llm_gateway.answer"
STREAM_FLAG = "stream"
ANSWER_LOGGED = "answer_logged"

# The answer's fields, as metadata key -> JSON path; what usage.from_openai, from_anthropic and
# the embeddings reader read (the sidecar rebuilds the body's shape from them).
ANSWER_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "prompt_tokens": ("usage", "prompt_tokens"),
    "completion_tokens": ("usage", "completion_tokens"),
    "total_tokens": ("usage", "total_tokens"),
    "cached_tokens": ("usage", "prompt_tokens_details", "cached_tokens"),
    "cache_write_tokens": ("usage", "prompt_tokens_details", "cache_write_tokens"),
    "reasoning_tokens": ("usage", "completion_tokens_details", "reasoning_tokens"),
    "input_tokens": ("usage", "input_tokens"),
    "output_tokens": ("usage", "output_tokens"),
    "cache_read_input_tokens": ("usage", "cache_read_input_tokens"),
    "cache_creation_input_tokens": ("usage", "cache_creation_input_tokens"),
}

# ext_authz's dynamic metadata lands in the filter's own namespace; the identity rides in it
# under extproc.contracts.IDENTITY_KEY. The check names its gateway route in this context key.
AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
AUTHZ_ROUTE_KEY = "route"

# Sent back to the client on every answer that went through the pipeline: quote it to find the usage record.
RESPONSE_REQUEST_ID = "x-gateway-request-id"

# Identity headers set by authz. Envoy strips them from clients at the listener
# (early header mutation) and the upstream phase strips them before egress.
INTERNAL_HEADERS: tuple[str, ...] = (
    "x-gw-user",
    "x-gw-tenant",
    "x-gw-identity",
    "x-gw-api",
    "x-gw-path",
    "x-gw-route",
)

# Whatever a client sends as credentials never reaches a provider; each attempt
# also clears what an earlier attempt set, since Envoy keeps header mutations across retries.
CREDENTIAL_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "cookie",
)

# Traces (extproc/telemetry/tracing.py): the attempt's trace context on single-provider routes,
# for the upstream header mutation that puts it in traceparent after Envoy's router wrote its own;
# and the answering attempt's span (id, start, number), from the upstream phase to the router
# phase on the answer's headers (taken off before the client sees them).
TRACE_DIRECT_HEADER = "x-gw-traceparent"
TRACE_ATTEMPT_HEADER = "x-gw-attempt"

# The client's own x-request-id, copied by Envoy before it replaces x-request-id with its own
# (render/filters.py): kept for the usage record and the access log, never trusted as an id.
CLIENT_REQUEST_ID = "x-gw-client-request-id"

# A stream's route timeout, set by the router phase (Envoy's router reads and removes it): streams
# are bounded by streamMaxDuration, whole answers by the route's requestTimeout.
UPSTREAM_TIMEOUT = "x-envoy-upstream-rq-timeout-ms"

# The stream relay (extproc/stream_relay.py): the router phase sets RELAY on a stream, with
# clear_route_cache, so Envoy picks the route's relay twin (render/routes.py; the twin removes the
# header before the provider leg), and a phase names the upstream the relay must dial in
# RELAY_UPSTREAM (the relay removes it). Both are x-gw-: no client can send them.
RELAY = "x-gw-relay"
RELAY_UPSTREAM = "x-gw-relay-upstream"
# Endpoint metadata key of a relay twin's endpoints: the upstream phase sets RELAY_UPSTREAM there.
RELAY_METADATA_KEY = "relay"
