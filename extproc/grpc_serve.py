"""One gRPC serve loop for both sidecars (extproc and authz), with grpc.health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("gateway.grpc")

GRPC_OPTIONS = [
    # Python gRPC defaults to 4 MiB messages; LLM bodies are larger (DESIGN.md).
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


def add_health(server: grpc.aio.Server) -> health.HealthServicer:
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def serve_grpc(name: str, listen: str, register: Callable[[grpc.aio.Server], None]) -> None:
    """Run one sidecar's gRPC server (plus grpc.health) until cancelled."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    register(server)
    add_health(server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"{name}: cannot listen on {listen}")
    await server.start()
    log.info("%s listening on %s", name, listen)
    try:
        await server.wait_for_termination()
    except asyncio.CancelledError:
        await server.stop(grace=1)
