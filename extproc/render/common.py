"""What every part of the Envoy bootstrap shares: names of the fixed clusters, addresses, units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

TYPE_URL = "type.googleapis.com/"
EXTPROC_CLUSTER = "gw_extproc"
AUTHZ_CLUSTER = "gw_authz"
ADMIN_CLUSTER = "gw_admin"
RELAY_SUFFIX = "_relay"  # a backend cluster's twin whose endpoints are the stream relay


def relay_cluster_name(cluster: str) -> str:
    return cluster + RELAY_SUFFIX


@dataclass(frozen=True)
class SidecarAddresses:
    """Where Envoy finds the sidecars and where it listens (the same defaults as ``render``'s CLI)."""

    extproc: str = "127.0.0.1:9001"
    authz: str = "127.0.0.1:9002"
    listen_host: str = "0.0.0.0"
    admin_host: str = "127.0.0.1"
    metrics: str = "127.0.0.1:9464"  # the extproc sidecar's /metrics (extproc --metrics-listen)
    relay: str = "127.0.0.1:9003"  # the extproc sidecar's stream relay (extproc --relay-listen)


def seconds(value: float) -> str:
    return f"{value:.3f}s"


def split_hostport(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def socket_address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def typed(type_name: str, **fields: Any) -> Json:
    """A typed_config: ``@type`` first, as Envoy's docs write them."""
    return {"@type": TYPE_URL + type_name, **fields}
