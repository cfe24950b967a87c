"""One gRPC serve loop for both sidecars (extproc and authz), with grpc.health, and the event loop
they run on."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc import ports

log = logging.getLogger("gateway.grpc")

GRPC_OPTIONS = [
    # Python gRPC defaults to 4 MiB messages; LLM bodies are larger (DESIGN.md).
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # gRPC turns SO_REUSEPORT on by default: a stale sidecar from an earlier run would then
    # share the port silently. Only several extproc workers share one (``share_port``).
    ("grpc.so_reuseport", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]

# The sidecars' event loop: uvloop, or asyncio's own with ``GATEWAY_EVENT_LOOP=asyncio``. Measured
# through the real Envoy (bench/floor.py): grpc.aio wakes the loop once per completed gRPC operation,
# and on uvloop a do-nothing ext_proc (4 messages a request) spends 15-25% less CPU per request and
# adds 0.5 ms less p50 at concurrency 1; the gateway about 10% less CPU per request (19 paired
# windows). ``GATEWAY_EVENT_LOOP=asyncio`` goes back to asyncio's own loop.
EVENT_LOOP_ENV = "GATEWAY_EVENT_LOOP"
DEFAULT_LOOP = "uvloop"

T = TypeVar("T")

# Set once by the CLI (``extproc --reuseport``) before serving; serve_grpc's default.
_share_port = False


class BindError(OSError):
    """The sidecar cannot listen on its address (usually: another process holds the port)."""


def share_port(enabled: bool) -> None:
    """Let several worker processes listen on the same port (SO_REUSEPORT; the kernel spreads
    connections). The supervisor asks for it only when it starts more than one extproc worker."""
    global _share_port
    _share_port = enabled


def grpc_options(reuseport: bool) -> list[tuple[str, int]]:
    return [(k, int(reuseport) if k == "grpc.so_reuseport" else v) for k, v in GRPC_OPTIONS]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when ``GATEWAY_EVENT_LOOP=uvloop`` (and it is installed), else None: asyncio's own."""
    if os.environ.get(EVENT_LOOP_ENV, DEFAULT_LOOP) != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop's wheels: asyncio's loop works, only slower
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the sidecars' event loop (``loop_factory``)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".", 1)[0]


def add_health(server: grpc.aio.Server) -> health.HealthServicer:
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return servicer


def _bind_error(name: str, listen: str) -> BindError:
    _, _, port = listen.rpartition(":")
    if port.isdigit() and (who := ports.holder(int(port))):
        return BindError(f"{name}: cannot listen on {listen}: the port is already in use by {who}")
    return BindError(f"{name}: cannot listen on {listen} (is the port in use?)")


async def serve_grpc(
    name: str, listen: str, register: Callable[[grpc.aio.Server], None], *, reuseport: bool | None = None
) -> None:
    """Run one sidecar's gRPC server (plus grpc.health) until cancelled; BindError if it cannot listen."""
    shared = _share_port if reuseport is None else reuseport
    server = grpc.aio.server(options=grpc_options(shared))
    register(server)
    add_health(server)
    try:
        bound = server.add_insecure_port(listen)
    except RuntimeError:  # grpcio raises "Failed to bind to address" (older versions returned 0)
        bound = 0
    if bound == 0:
        raise _bind_error(name, listen)
    await server.start()
    shared_note = ", port shared with other workers" if shared else ""
    log.info("%s listening on %s (%s loop%s)", name, listen, loop_name(), shared_note)
    try:
        await server.wait_for_termination()
    except asyncio.CancelledError:
        await server.stop(grace=1)
