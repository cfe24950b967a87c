"""``authorization``: CEL rules over who calls and what they ask (agentgateway's policy).

A rule sees agentgateway's variables:

- ``jwt``: the verified token's claims (``{}`` when the caller has none)
- ``apiKey``: the API key's metadata (``{}`` likewise)
- ``request``: ``method``, ``path``, ``pathAndQuery``, ``host``, ``scheme``, ``uri``, ``version``,
  ``headers`` (lowercase names; credentials are never in them)
- ``llm``: ``model`` (after the route's aliases), ``requestModel`` (as the client wrote it),
  ``streaming`` (also ``stream``), ``api``
- ``source``: ``address``, ``port`` of the downstream peer

Semantics, as agentgateway's: any true ``deny`` refuses; every ``require`` must be true; if there
are ``allow`` rules (a bare string is one), at least one must be true. Only deny rules is a
denylist; no rules allows everything.

One difference, on purpose: a rule that fails at run time (a missing claim or header, a wrong
type, a result that is not a boolean) counts as **false** for allow and require and as **true**
for deny, so an error never lets a request through. agentgateway counts it as false everywhere,
which makes ``deny: jwt.country == "XX"`` pass a token without ``country``. Write
``has(jwt.country) && ...`` where a claim may be absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cel

from extproc.authz.caller import Caller, Forbidden, Grant
from extproc.authz.cel_expr import compile_expression, extensions_for, fields_used
from extproc.authz.request import AuthRequest
from extproc.config.auth import AuthorizationPolicy

log = logging.getLogger("gateway.authz")


@dataclass(frozen=True)
class CompiledRule:
    kind: str  # allow | deny | require
    source: str
    program: cel.Program


def compile_rules(policy: AuthorizationPolicy) -> list[CompiledRule]:
    rules = []
    for rule in policy.rules:
        for kind in ("allow", "deny", "require"):
            source = getattr(rule, kind)
            if source is not None:
                rules.append(CompiledRule(kind, source, compile_expression(source)))
    return rules


def context(req: AuthRequest, caller: Caller, wanted: dict[str, frozenset[str] | None]) -> dict[str, Any]:
    """The variables the rules use, with only the fields they read (``wanted``: fields_used).

    Each value costs a conversion into CEL (microseconds per string), so a Keycloak token's
    twenty claims or a request's headers are not converted for a rule that reads ``jwt.groups``.
    """
    out: dict[str, Any] = {}
    for var, fields in wanted.items():
        value = _VARIABLES[var](req, caller)
        out[var] = value if fields is None else {k: value[k] for k in fields if k in value}
    return out


def _request(req: AuthRequest, _caller: Caller) -> dict[str, Any]:
    http = req.check.attributes.request.http
    scheme = http.scheme or "http"
    host = req.headers.get(":authority", "") or http.host
    return {
        **req.cel_request(),
        "host": host,
        "pathAndQuery": req.path,
        "scheme": scheme,
        "uri": f"{scheme}://{host}{req.path}",
        "version": http.protocol,
    }


def _llm(req: AuthRequest, _caller: Caller) -> dict[str, Any]:
    llm = req.cel_llm()
    return {**llm, "streaming": llm["stream"]}


def _source(req: AuthRequest, _caller: Caller) -> dict[str, Any]:
    sock = req.check.attributes.source.address.socket_address
    return {"address": req.source_address, "port": sock.port_value}


_VARIABLES = {
    "jwt": lambda _req, caller: caller.claims,
    "apiKey": lambda _req, caller: caller.api_key,
    "request": _request,
    "llm": _llm,
    "source": _source,
}


class CelRules:
    name = "authorization"

    def __init__(self, policy: AuthorizationPolicy) -> None:
        self.rules = compile_rules(policy)
        self.allow = [r for r in self.rules if r.kind == "allow"]
        self.deny = [r for r in self.rules if r.kind == "deny"]
        self.require = [r for r in self.rules if r.kind == "require"]
        self.fields = fields_used([r.source for r in self.rules])
        self.functions = extensions_for([r.program for r in self.rules])
        self._reported: set[tuple[str, str]] = set()

    async def start(self) -> None:
        return None

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None:
        if not self.rules:
            return None
        # One context for every rule: the conversion into CEL values is the expensive part.
        ctx = cel.Context(context(req, caller, self.fields), self.functions or None)
        for rule in self.deny:
            if self._holds(rule, ctx, on_error=True):
                raise self._refusal(req, rule)
        for rule in self.require:
            if not self._holds(rule, ctx, on_error=False):
                raise self._refusal(req, rule)
        if self.allow and not any(self._holds(rule, ctx, on_error=False) for rule in self.allow):
            raise self._refusal(req, None)
        return None

    def _holds(self, rule: CompiledRule, ctx: cel.Context, *, on_error: bool) -> bool:
        try:
            value = rule.program.execute(ctx)
        except Exception as exc:  # cel raises KeyError, TypeError, RuntimeError, ...
            self._report(rule, type(exc).__name__, f"failed ({type(exc).__name__}: {exc})", on_error)
            return on_error
        if not isinstance(value, bool):
            self._report(rule, "type", f"gave {type(value).__name__}, not a boolean", on_error)
            return on_error
        return value

    def _report(self, rule: CompiledRule, kind: str, what: str, counted: bool) -> None:
        # At warning once per rule and kind of failure (a missing claim repeats on every request).
        key = (rule.source, kind)
        level = logging.DEBUG if key in self._reported else logging.WARNING
        self._reported.add(key)
        log.log(level, "authorization %s rule %r %s: counted as %s", rule.kind, rule.source, what, counted)

    @staticmethod
    def _refusal(req: AuthRequest, rule: CompiledRule | None) -> Forbidden:
        # The client learns that rules refused it, never which expression (that is policy detail).
        why = f"{rule.kind} rule {rule.source!r}" if rule else "no allow rule matched"
        log.debug("authz: %s %s refused by authorization: %s", req.method, req.bare_path, why)
        return Forbidden("this request is not allowed by the route's authorization rules")
