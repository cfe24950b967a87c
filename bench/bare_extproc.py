"""The reference point for the gateway's overhead: a Python ext_proc that does nothing.

It answers every message with "continue", so Envoy pays only the gRPC round
trips (request headers, request body, response headers, response body), the
cost any Python ext_proc has before it does real work.

    python bench/bare_extproc.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

_PHASES = ("request_headers", "request_body", "response_headers", "response_body")


class Continue(pb_grpc.ExternalProcessorServicer):
    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for msg in request_iterator:
            kind = msg.WhichOneof("request")
            resp = pb.ProcessingResponse()
            if kind in _PHASES:
                getattr(resp, kind).response.SetInParent()
            elif kind is not None:
                getattr(resp, kind).SetInParent()
            yield resp


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Continue(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
