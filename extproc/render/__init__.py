"""Render Envoy's bootstrap from the resolved gateway config, one module per concern.

- ``filters``: the HTTP filters (ext_authz, router- and upstream-level ext_proc, ...) and the
  early header mutation that removes what clients may not send;
- ``local_replies``: Envoy's own errors as the client API's error JSON, and the access log;
- ``routes``: virtual hosts (listener hostnames), matches, host rewrite, retries (failover);
- ``clusters``: the sidecars, and one cluster per route backend with provider groups as
  priority levels, endpoint ids in metadata, TLS per endpoint, circuit breakers;
- ``listeners`` and ``bootstrap``: the listeners and the whole document.

The filter order and why: envoy/README.md. Golden renders of the default and seed configs are in
envoy/golden/ and diffed by tests/unit/test_render.py.
"""

from __future__ import annotations

import json

import yaml

from extproc.render.bootstrap import render
from extproc.render.common import Json, SidecarAddresses

__all__ = ["Json", "SidecarAddresses", "dump", "render"]


def dump(rendered: Json, fmt: str = "yaml") -> str:
    """The text Envoy reads (and the golden files hold): YAML in document order, or JSON."""
    if fmt == "json":
        return json.dumps(rendered, indent=2) + "\n"
    return yaml.safe_dump(rendered, sort_keys=False)
