"""What Envoy does for observability: ``/metrics`` on the metrics listener, and the gRPC access
log that sends the requests the pipeline never saw to the extproc sidecar (their usage records).

- ``:15020/metrics`` -> the extproc sidecar's metrics server (the gateway's GenAI metrics followed
  by Envoy's own stats: extproc/telemetry/metrics_http.py);
- ``:15020/metrics/envoy`` -> Envoy's admin ``/stats/prometheus`` alone.
"""

from __future__ import annotations

import re

from extproc.gateway import Gateway
from extproc.headers import METADATA_NAMESPACE, REQUEST_ID
from extproc.render import answer_log
from extproc.render.common import ADMIN_CLUSTER, EXTPROC_CLUSTER, Json, socket_address, split_hostport, typed

METRICS_CLUSTER = "gw_metrics"
LOG_NAME = "gateway_rejected"  # the gRPC access log's name, as the extproc sidecar sees it

# request.headers["x-team"] or request.headers.x_team in a CEL field: Envoy must send that header.
_HEADER_REF = re.compile(r"""headers\s*\[\s*["']([^"']+)["']\s*\]|headers\.([A-Za-z_][A-Za-z0-9_]*)""")


def metrics_cluster(address: str) -> Json:
    host, port = split_hostport(address)
    return {
        "name": METRICS_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": METRICS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
        },
    }


def metrics_routes() -> list[Json]:
    return [
        {
            "match": {"path": "/metrics"},
            # A scrape reads every worker's samples and Envoy's stats: allow it a few seconds.
            "route": {"cluster": METRICS_CLUSTER, "timeout": "10s"},
        },
        {
            "match": {"path": "/metrics/envoy"},
            "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": "/stats/prometheus"},
        },
    ]


def _logged_headers(gw: Gateway) -> list[str]:
    cfg = gw.config.config
    exprs = [*cfg.metrics.fields.add.values(), *cfg.logging.fields.add.values()]
    names = {(a or b).lower() for e in exprs for a, b in _HEADER_REF.findall(e)}
    return sorted(names)


def rejected_access_log(gw: Gateway) -> Json:
    """Requests answered with status >= 400 that no exchange recorded (no gateway request id)."""
    never_seen = {
        "metadata_filter": {
            "matcher": {
                "filter": METADATA_NAMESPACE,
                "path": [{"key": REQUEST_ID}],
                # Envoy's access-log metadata filter ignores ``invert``: a present id (never null)
                # fails this matcher, and an absent one is logged (match_if_key_not_found).
                "value": {"null_match": {}},
            },
            "match_if_key_not_found": True,
        }
    }
    refused = {
        "status_code_filter": {
            "comparison": {"op": "GE", "value": {"default_value": 400, "runtime_key": "gw.rejected_log"}}
        }
    }
    config: Json = {
        "common_config": {
            "log_name": LOG_NAME,
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
            "buffer_flush_interval": "0.2s",
        }
    }
    headers = _logged_headers(gw)
    if headers:
        config["additional_request_headers_to_log"] = headers
    chosen: Json = {"and_filter": {"filters": [refused, never_seen]}}
    if answer_log.used(gw):  # and the answers the router phase left to this log
        chosen = {"or_filter": {"filters": [chosen, answer_log.logged_filter()]}}
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": chosen,
        "typed_config": typed("envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig", **config),
    }
