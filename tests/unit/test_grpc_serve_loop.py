"""The sidecars' event loop: uvloop by default, asyncio's own when asked (extproc/grpc_serve.py)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from extproc import grpc_serve


async def _loop_module() -> str:
    return grpc_serve.loop_name()


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(grpc_serve.EVENT_LOOP_ENV, raising=False)
    assert grpc_serve.run(_loop_module()) == grpc_serve.DEFAULT_LOOP == "uvloop"


def test_asyncio_loop_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(grpc_serve.EVENT_LOOP_ENV, "asyncio")
    assert grpc_serve.run(_loop_module()) == "asyncio"


def test_asyncio_loop_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(grpc_serve.EVENT_LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails, as on a platform without its wheel
    assert grpc_serve.loop_factory() is None
    assert grpc_serve.run(_loop_module()) == "asyncio"


def test_run_returns_the_result_and_closes_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(grpc_serve.EVENT_LOOP_ENV, "uvloop")
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> int:
        seen.append(asyncio.get_running_loop())
        return 42

    assert grpc_serve.run(main()) == 42
    assert seen[0].is_closed()


def test_grpc_aio_serves_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """grpc.aio's completion queue wakes a uvloop loop (a health check round trip in process)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    monkeypatch.setenv(grpc_serve.EVENT_LOOP_ENV, "uvloop")

    async def main() -> int:
        server = grpc.aio.server()
        grpc_serve.add_health(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                return reply.status
        finally:
            await server.stop(None)

    assert grpc_serve.run(main()) == health_pb2.HealthCheckResponse.SERVING
