"""A stream's provider leg through the stream relay (extproc/stream_relay.py; README "When a
provider cuts a stream"): what the router phase sets to move a stream onto its route's relay twin
(render/routes.py), and how the upstream phase tells a relay twin's endpoint (render/clusters.py)."""

from __future__ import annotations

import re

from extproc import headers as h
from extproc.gateway import Upstream
from extproc.pipeline.reply import Reply

_RELAY_ENDPOINT = re.compile(rf'key: "{h.RELAY_METADATA_KEY}"\s+value \{{\s*string_value: "1"')


def via_relay(reply: Reply, route_name: str, direct: Upstream | None) -> None:
    """A provider connection cut after the headers then ends as a body without its last event,
    which the reader ends with an error event, instead of a reset Envoy cannot answer. Envoy
    matches the route again and picks its relay twin. ``direct``: a single-provider route's
    upstream, named here; on several-provider routes the upstream phase names each attempt's."""
    reply.set_headers[h.RELAY] = route_name
    reply.clear_route_cache = True
    if direct is not None:
        reply.set_headers[h.RELAY_UPSTREAM] = direct.id
    # Envoy matches no route for a request without x-forwarded-proto (its route table treats that
    # as a broken request), so the egress allowlist's removal waits: the twin route removes it
    # after matching, and the relay never forwards it.
    reply.remove_headers = [r for r in reply.remove_headers if r != "x-forwarded-proto"]


def is_relay_endpoint(metadata_text: str) -> bool:
    """Whether Envoy picked a relay twin's endpoint (its metadata, as protobuf text)."""
    return _RELAY_ENDPOINT.search(metadata_text) is not None
