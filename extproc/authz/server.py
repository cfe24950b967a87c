"""The ext_authz gRPC service: one Check per request on routes with an auth policy.

Envoy names the gateway route in the check's context extensions and sends the whole body. An
allowed request goes on with its identity in ext_authz's dynamic metadata (extproc reads it
there; no client can set it); a refused one gets 401/403 in the client API's error JSON. Any
fault here is a 503 (fail closed), never an unchecked pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from google.rpc import code_pb2, status_pb2

from extproc.authz.caller import Denial, Unavailable
from extproc.authz.chain import Decision, RouteAuth
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest
from extproc.contracts import IDENTITY_KEY, encode_identity
from extproc.errors import error_body
from extproc.gateway import Gateway
from extproc.grpc_serve import serve_grpc

log = logging.getLogger("gateway.authz")

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    # `value`, not `raw_value`: Envoy reads a denial's headers from `value` (raw ones arrive empty).
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def allowed(decision: Decision) -> pb.CheckResponse:
    resp = pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
    ok = resp.ok_response
    grant = decision.grant
    for name, value in grant.headers.items():
        ok.headers.append(_header(name, value))
    for name, value in grant.response_headers.items():
        ok.response_headers_to_add.append(_header(name, value))
    ok.headers_to_remove.extend(grant.remove_headers)
    meta = dict(grant.metadata)
    meta[IDENTITY_KEY] = encode_identity(decision.caller.identity(decision.allowed_models))
    resp.dynamic_metadata.update(meta)
    return resp


def denied(denial: Denial, api: str) -> pb.CheckResponse:
    resp = pb.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
    d = resp.denied_response
    d.status.code = denial.status  # type: ignore[assignment]  # Envoy's StatusCode numbers are HTTP's
    headers = dict(denial.headers)
    if denial.body is not None:
        d.body = denial.body.decode("utf-8", "replace")
        headers.setdefault("content-type", "text/plain")
    else:
        d.body = error_body(api, denial.status, denial.message, denial.code).decode()
        headers["content-type"] = "application/json"
    for name, value in headers.items():
        d.headers.append(_header(name, value))
    if denial.caller is not None and not denial.caller.anonymous:
        # Envoy keeps a denial's metadata too: the refused request's record names its caller.
        resp.dynamic_metadata.update({IDENTITY_KEY: encode_identity(denial.caller.identity(None))})
    return resp


class Authorization(pb_grpc.AuthorizationServicer):
    def __init__(self, gateway: Gateway, ctx: AuthContext) -> None:
        self.gateway = gateway
        self.ctx = ctx
        # One RouteAuth per gateway route (its later matches share it).
        self.routes = {r.id: RouteAuth.build(r, ctx) for r in gateway.routes if r.needs_authz}

    async def start(self) -> None:
        for auth in self.routes.values():
            await auth.start()

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        req = AuthRequest.of(request, self.gateway)
        try:
            auth = self.routes.get(req.route.id) if req.route else None
            if auth is None:
                # Envoy checked a route this sidecar has no policy for: its config is not ours.
                raise Unavailable("the gateway's authorization config does not match this route")
            return allowed(await auth.decide(req))
        except Denial as denial:
            if denial.status >= 500:
                log.warning("authz: %s %s: %s", req.method, req.bare_path, denial.message)
            return denied(denial, req.api)
        except Exception:
            log.exception("authz: check failed for %s %s", req.method, req.bare_path)
            return denied(Unavailable("the gateway could not check this request's authorization"), req.api)


async def serve(gateway: Gateway, listen: str, config_dir: Path | None = None) -> None:
    ctx = AuthContext(config_dir or Path.cwd())
    servicer = Authorization(gateway, ctx)
    await servicer.start()
    try:
        await serve_grpc(
            "authz", listen, lambda server: pb_grpc.add_AuthorizationServicer_to_server(servicer, server)
        )
    finally:
        await ctx.close()
