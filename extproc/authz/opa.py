"""``opa``: a Rego policy decides, with the input opa-envoy-plugin gives it (opa_input.py).

In process (``file``, optional ``data``; the regorus engine, reloaded on change: opa_engine.py)
or on an OPA server (``url``: ``POST {url}/v1/data/{path}`` with ``{"input": ...}``, OPA's REST
Data API). Either way the decision is read as opa-envoy-plugin reads it (opa_decision.py).

Refusals: the policy's own (``false``: 403; an object: its status, headers and body); an
undefined result (no rule matched and no default): 403; a server that is down, slow or in
error, or a policy that fails: 503. Nothing here ever turns a fault into an allow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from extproc.authz.caller import Caller, Denial, Forbidden, Grant, Unavailable
from extproc.authz.mechanism import AuthContext
from extproc.authz.opa_decision import UNDEFINED, grant_or_denial
from extproc.authz.opa_engine import OpaLoadError, RegoEngine, build, query_of
from extproc.authz.opa_input import InputError, dumps, input_document
from extproc.authz.request import AuthRequest
from extproc.config.auth import OpaPolicy
from extproc.config.base import parse_duration

log = logging.getLogger("gateway.authz")

_UNDECIDED = object()


class OpaAuthorizer:
    name = "opa"

    def __init__(self, policy: OpaPolicy, ctx: AuthContext, *, poll_interval: float = 1.0) -> None:
        self.policy = policy
        self.ctx = ctx
        self.timeout = parse_duration(policy.timeout)
        self.path = policy.path.strip("/")
        self.engine: RegoEngine | None = None
        self.url: str | None = None
        if policy.file is not None:
            data = ctx.path(policy.data) if policy.data is not None else None
            query = query_of(policy.path)
            self.engine = RegoEngine(ctx.path(policy.file), data, query, poll_interval=poll_interval)
        else:
            query_of(policy.path)  # the same rule-path check for a server
            self.url = f"{str(policy.url).rstrip('/')}/v1/data/{self.path}"

    async def start(self) -> None:
        if self.engine is not None:
            await self.engine.start(self.ctx.spawn)

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None:
        try:
            text = dumps(input_document(req, caller))
        except InputError as exc:
            # opa-envoy-plugin answers 400 when the request cannot become its input.
            message = f"the request cannot be checked: {exc}"
            raise Denial(message, status=400, code="invalid_request") from None
        decision = self._evaluate(text) if self.engine is not None else await self._ask_server(text)
        if decision is _UNDECIDED:
            raise Forbidden("the authorization policy does not allow this request")
        return grant_or_denial(decision, self._where)

    @property
    def _where(self) -> str:
        return str(self.engine.rego) if self.engine is not None else str(self.url)

    def _evaluate(self, text: str) -> Any:
        assert self.engine is not None
        try:
            result = self.engine.evaluate(text)
        except RuntimeError as exc:
            log.error("opa: evaluating %s failed: %s", self.engine.query, str(exc).strip().splitlines()[-1])
            raise Unavailable("the authorization policy could not decide") from None
        return _UNDECIDED if result == UNDEFINED else result

    async def _ask_server(self, text: str) -> Any:
        assert self.url is not None
        body = b'{"input":' + text.encode() + b"}"
        try:
            async with self.ctx.session().post(
                self.url,
                data=body,
                headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("opa: %s unreachable: %s", self.url, type(exc).__name__)
            raise Unavailable("the authorization server is unavailable") from None
        if status != 200:
            log.warning("opa: %s answered %d: %s", self.url, status, payload[:200].decode("utf-8", "replace"))
            raise Unavailable("the authorization server could not decide")
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("opa: %s answered with a body that is not JSON", self.url)
            raise Unavailable("the authorization server could not decide") from None
        if not isinstance(answer, dict):
            raise Unavailable("the authorization server could not decide")
        # The Data API's answer for an undefined document is {} (no "result").
        return answer.get("result", _UNDECIDED)


def policy_file_problems(policies: list[tuple[str, OpaPolicy]], config_dir: Path) -> list[str]:
    """For ``check``: each in-process policy that would not load (``file:line:col: what``)."""
    problems = []
    seen: set[tuple[str, str | None, str]] = set()
    for route, policy in policies:
        key = (str(policy.file), policy.data, policy.path)
        if policy.file is None or key in seen:  # a route's later matches share its policy
            continue
        seen.add(key)
        data = None if policy.data is None else _resolve(config_dir, policy.data)
        try:
            build(_resolve(config_dir, policy.file), data, query_of(policy.path))
        except OpaLoadError as exc:
            problems.append(f"{exc} (route {route}, policies.opa)")
    return problems


def _resolve(config_dir: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else config_dir / p
