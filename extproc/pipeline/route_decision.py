"""What the router phase tells Envoy and the upstream phase about a request: the route decision
in dynamic metadata, the plain keys Envoy's access log and error mappers read, and how an
endpoint's metadata names its upstream.
"""

from __future__ import annotations

import re

from extproc import contracts
from extproc import headers as h
from extproc.gateway import Gateway, ResolvedRoute, Upstream
from extproc.pipeline import client_request, trace_context
from extproc.pipeline.exchange import Exchange
from extproc.pipeline.reply import Reply

_UPSTREAM_ID = re.compile(r'key: "upstream"\s+value \{\s*string_value: "([^"]+)"')


def upstream_of_metadata(gw: Gateway, metadata_text: str) -> Upstream | None:
    """An endpoint's metadata arrives as protobuf text; it carries our upstream id."""
    m = _UPSTREAM_ID.search(metadata_text)
    return gw.upstreams_by_id.get(m.group(1)) if m else None


def forward_of(route: ResolvedRoute) -> tuple[str, ...]:
    ai = route.policies.ai
    return tuple(ai.forward_headers) if ai is not None else ()


def envoy_keys(ex: Exchange, path: str) -> dict[str, str]:
    """The plain metadata keys Envoy's access log and local-reply mappers read. The client's own
    request id goes by metadata too: its header is gone by the time Envoy logs (egress allowlist)."""
    keys = {h.API: ex.api, h.PATH: path, h.REQUEST_ID: ex.request_id}
    if ex.client_request_id is not None:
        keys[h.CLIENT_ID] = ex.client_request_id
    return keys


def reply(ex: Exchange) -> Reply:
    """What the upstream phase needs (typed), and the plain keys Envoy's access log and error
    mappers read (``api``, ``path``, ``request_id``)."""
    path = client_request.rewritten_path(ex.route, ex.path)
    decision = contracts.RouteDecision(
        request_id=ex.request_id,
        client_api=contracts.client_api(ex.api),
        client_path=path,
        route_id=ex.route.id,
        requested_model=ex.request_model or "",
        stream=ex.stream,
    )
    return Reply(
        metadata={
            **envoy_keys(ex, path),
            contracts.DECISION_KEY: contracts.encode_decision(decision),
            **trace_context.decision_keys(ex),
        }
    )
