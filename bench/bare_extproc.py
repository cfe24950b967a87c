"""The reference point for the gateway's overhead: a Python ext_proc that does nothing.

It answers every message with "continue", so Envoy pays only the gRPC round
trips (request headers, request body, response headers, response body), the
cost any Python ext_proc has before it does real work.

    python bench/bare_extproc.py PORT                      # what bench/run.py measures
    python bench/bare_extproc.py unix:/tmp/x.sock --serve rw --uvloop --options latency

The flags are the serving variants bench/floor.py compares (the same answers each time):

- ``--serve gen``: a grpc.aio servicer written as an async generator (the gateway's today);
- ``--serve rw``:  grpc.aio, a coroutine that loops on ``context.read()`` / ``context.write()``;
- ``--serve sync``: the synchronous ``grpc.server`` on a thread pool;
- ``--uvloop``:    uvloop as the asyncio event loop;
- ``--options latency``: server channel options aimed at latency (see ``OPTIONS``);
- ``--switch-interval S``: how soon a thread waiting for the GIL gets it (Python's default 5 ms);
- ``--silent``:    answer nothing (Envoy's ``observability_mode`` expects no answers);
- ``--close-after PHASE``: end the stream once that message is answered (``gen`` only): Envoy
  then goes on without the sidecar, so ``request_body`` makes it 2 messages a request, the
  response's decided per request (Envoy's ext_proc protocol: a stream the server closes cleanly
  is not consulted again).

The address is a port (127.0.0.1), ``host:port`` or ``unix:PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent import futures

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

_PHASES = ("request_headers", "request_body", "response_headers", "response_body")

OPTIONS: dict[str, list[tuple[str, int | str]]] = {
    "default": [],
    "latency": [
        ("grpc.optimization_target", "latency"),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", 1000),
        ("grpc.http2.write_buffer_size", 0),
    ],
}


# ``--set-path``: the request body's answer rewrites :path (can a body answer carry header
# mutations when Envoy skipped the request headers message?).
_SET_PATH: list[str] = []
_CLOSE_AFTER: list[str] = []  # ``--close-after``


def answer(msg: pb.ProcessingRequest) -> pb.ProcessingResponse:
    kind = msg.WhichOneof("request")
    resp = pb.ProcessingResponse()
    if kind in _PHASES:
        common = getattr(resp, kind).response
        common.SetInParent()
        if kind == "request_body" and _SET_PATH:
            common.header_mutation.set_headers.add(
                header=base_pb2.HeaderValue(key=":path", raw_value=_SET_PATH[0].encode())
            )
            common.clear_route_cache = True
    elif kind is not None:
        getattr(resp, kind).SetInParent()
    return resp


def _report_attributes(msg: pb.ProcessingRequest) -> None:
    """``--show-attributes``: which message carries which attributes (a probe of Envoy's behaviour)."""
    attrs = msg.attributes.get("envoy.filters.http.ext_proc")
    names = sorted(attrs.fields) if attrs is not None else []
    print(f"{msg.WhichOneof('request')} attributes={names}", file=sys.stderr, flush=True)


class Generator(pb_grpc.ExternalProcessorServicer):
    def __init__(self, silent: bool = False, show: bool = False) -> None:
        self.silent, self.show = silent, show

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for msg in request_iterator:
            if self.show:
                _report_attributes(msg)
            if not self.silent:
                yield answer(msg)
            if _CLOSE_AFTER and msg.WhichOneof("request") == _CLOSE_AFTER[0]:
                return


class ReadWrite(pb_grpc.ExternalProcessorServicer):
    """A coroutine, not a generator: grpc.aio then leaves reading and writing to the handler."""

    def __init__(self, silent: bool = False, show: bool = False) -> None:
        self.silent, self.show = silent, show

    async def Process(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> None:
        read, write = context.read, context.write
        while (msg := await read()) is not grpc.aio.EOF:
            if self.show:
                _report_attributes(msg)
            if not self.silent:
                await write(answer(msg))


class Sync(pb_grpc.ExternalProcessorServicer):
    def __init__(self, silent: bool = False, show: bool = False) -> None:
        self.silent, self.show = silent, show

    def Process(  # type: ignore[override]
        self, request_iterator: Iterator[pb.ProcessingRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ProcessingResponse]:
        for msg in request_iterator:
            if self.show:
                _report_attributes(msg)
            if not self.silent:
                yield answer(msg)


def _address(where: str) -> str:
    return f"127.0.0.1:{where}" if where.isdigit() else where


async def serve_aio(args: argparse.Namespace) -> None:
    server = grpc.aio.server(options=OPTIONS[args.options])
    servicer = (Generator if args.serve == "gen" else ReadWrite)(args.silent, args.show_attributes)
    pb_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
    server.add_insecure_port(_address(args.listen))
    await server.start()
    await server.wait_for_termination()


def serve_sync(args: argparse.Namespace) -> None:
    pool = futures.ThreadPoolExecutor(max_workers=args.threads)
    server = grpc.server(pool, options=OPTIONS[args.options], maximum_concurrent_rpcs=None)
    pb_grpc.add_ExternalProcessorServicer_to_server(Sync(args.silent, args.show_attributes), server)
    server.add_insecure_port(_address(args.listen))
    server.start()
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("listen", help="PORT, host:port or unix:PATH")
    parser.add_argument("--serve", choices=("gen", "rw", "sync"), default="gen")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--options", choices=sorted(OPTIONS), default="default")
    parser.add_argument("--threads", type=int, default=32, help="sync: the pool (one thread per open stream)")
    parser.add_argument("--silent", action="store_true", help="answer nothing (observability_mode)")
    parser.add_argument("--show-attributes", action="store_true")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (the GIL's hand-over)")
    parser.add_argument("--set-path", help="the request body's answer sets :path to this")
    parser.add_argument("--close-after", choices=_PHASES, help="end the stream once this message is answered")
    args = parser.parse_args(argv)
    if args.set_path:
        _SET_PATH.append(args.set_path)
    if args.close_after:
        _CLOSE_AFTER.append(args.close_after)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.serve == "sync":
        serve_sync(args)
        return
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(serve_aio(args))


if __name__ == "__main__":
    main()
