"""The ext_authz gRPC service.

Today it allows every request (real identity checks come with their own issue),
so the filter chain is complete from day one and fails closed when it is down.
It already owns the identity headers: whatever a client sent as ``x-gw-*`` is
replaced, never appended to.
"""

from __future__ import annotations

import logging

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from google.rpc import code_pb2, status_pb2

from extproc.gateway import Gateway
from extproc.grpc_serve import serve_grpc

log = logging.getLogger("gateway.authz")

ANONYMOUS = "anonymous"


class Authorization(pb_grpc.AuthorizationServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        resp = pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        ok = resp.ok_response
        ok.headers.add(
            header=base_pb2.HeaderValue(key="x-gw-user", raw_value=ANONYMOUS.encode()),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        return resp


async def serve(gateway: Gateway, listen: str) -> None:
    await serve_grpc(
        "authz",
        listen,
        lambda server: pb_grpc.add_AuthorizationServicer_to_server(Authorization(gateway), server),
    )
