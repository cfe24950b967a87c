"""The admin API's aiohttp app: one token, one port, routes from the features that have any.

Served by the extproc sidecar (worker 0 when there are several: the supervisor passes
``--no-admin-api`` to the others), on its event loop, so a route may read and change that
process's state (the in-process limit store, say) without locks; anything slow (a database query)
runs in a thread. Binding 127.0.0.1 by default; every request needs
``Authorization: Bearer <config.adminApi.token>``, compared in constant time, else 401.

Adding routes: write a module with ``def routes(ctx: AdminContext) -> list[web.RouteDef]`` and
append it to ``ROUTE_SETS``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from extproc.config.ledger import AdminApiConfig
from extproc.gateway import Gateway, resolve_secret

if TYPE_CHECKING:
    from extproc.limits.context import LimitsContext

log = logging.getLogger("gateway.admin")

REALM = 'Bearer realm="llm-gateway-admin"'


@dataclass(frozen=True)
class AdminContext:
    gateway: Gateway
    config_dir: Path
    ledger_url: str | None  # None: config.ledger.enabled is false
    limits: LimitsContext | None = None  # the serving process's store and policy files (quotas)


RouteSet = Callable[[AdminContext], list[web.RouteDef]]


def error(status: int, message: str, code: str, param: str | None = None, **headers: str) -> web.Response:
    """The admin API's error JSON; ``param`` names the request field at fault (400s)."""
    body = {"error": {"message": message, "type": "admin_error", "code": code, "param": param}}
    return web.json_response(body, status=status, headers=headers or None)


def _auth(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return error(401, "the admin API needs Authorization: Bearer <adminApi.token>", "unauthorized",
                         **{"WWW-Authenticate": REALM})  # fmt: skip
        return await handler(request)

    return check


def route_sets() -> list[RouteSet]:
    from extproc.admin import quotas, usage

    return [usage.routes, quotas.routes]


def build_app(ctx: AdminContext, token: str, sets: list[RouteSet] | None = None) -> web.Application:
    app = web.Application(middlewares=[_auth(token)])
    for routes in sets if sets is not None else route_sets():
        app.add_routes(routes(ctx))
    return app


async def start(ctx: AdminContext, cfg: AdminApiConfig) -> web.AppRunner | None:
    """Serve the admin API until the runner is cleaned up; None (logged) if it cannot be served."""
    token, missing = resolve_secret(cfg.token)
    if not token:
        why = f"environment variable {missing} is not set" if missing else "config.adminApi.token is not set"
        log.error("admin API not served: %s (it never runs without a token)", why)
        return None
    runner = web.AppRunner(build_app(ctx, token), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port).start()
    except OSError as exc:  # not the data path: requests are served without it
        log.error("admin API not served: cannot listen on %s:%d (%s)", cfg.host, cfg.port, exc)
        await runner.cleanup()
        return None
    log.info("admin API on http://%s:%d", cfg.host, cfg.port)
    return runner
