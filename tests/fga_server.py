"""A test server speaking OpenFGA's HTTP Check API, for the shipped model.

There is no OpenFGA engine in Python, and tests cannot run the Go server, so this one evaluates
the shipped model's semantics (policies/openfga/model.fga) over its own tuples: direct tuples,
type-bound public access (``user:*``) and usersets (``team:eng#member``), stored or contextual.
It answers as OpenFGA does: ``{"allowed": bool, "resolution": ""}``, and errors as
``{"code": ..., "message": ...}`` (an unknown store is 404, a bad tuple 400).

It reads the model's DSL and refuses a model it could not evaluate (anything but direct type
restrictions), so a change to the shipped model cannot leave this server answering for the old one.
Tests can make it slow (``delay``), fail (``fail_status``) or stop listening (``stop``).
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

MODEL_FILE = Path(__file__).resolve().parents[1] / "policies" / "openfga" / "model.fga"
STORE_ID = "01HVMMBCMGZNT3SED4Z17ECXCA"
MODEL_ID = "01HVMMBCMGZNT3SED4Z17ECXCB"

_DEFINE = re.compile(r"define (\w+): \[([^\]]*)\]$")


def parse_model(text: str) -> dict[str, dict[str, list[str]]]:
    """type -> relation -> its type restrictions (``user``, ``user:*``, ``team#member``)."""
    types: dict[str, dict[str, list[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line in ("model", "relations") or line.startswith("schema"):
            continue
        if line.startswith("type "):
            current = line.split()[1]
            types[current] = {}
            continue
        m = _DEFINE.fullmatch(line)
        if m is None or current is None:
            raise ValueError(f"the test server evaluates direct type restrictions only, not {line!r}")
        types[current][m.group(1)] = [r.strip() for r in m.group(2).split(",")]
    return types


class FgaError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> FgaError:
    return FgaError(400, "validation_error", message)


@dataclass
class Tuple:
    user: str
    relation: str
    object: str


@dataclass
class FgaServer:
    tuples: list[Tuple] = field(default_factory=list)
    store_id: str = STORE_ID
    model_id: str = MODEL_ID
    token: str | None = None  # a preshared key the server requires, if set
    delay: float = 0.0  # seconds before each answer
    fail_status: int | None = None  # answer every check with this error status
    checks: list[dict[str, Any]] = field(default_factory=list)  # every check body received
    model: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: parse_model(MODEL_FILE.read_text())
    )

    # --- the model's semantics -----------------------------------------------------------------

    def _object(self, obj: str) -> str:
        kind, sep, oid = obj.partition(":")
        if not sep or not oid or ":" in oid or "#" in obj or any(c.isspace() for c in obj):
            raise _bad(f"invalid 'object' field format: {obj!r}")
        if kind not in self.model:
            raise _bad(f"type '{kind}' not found")
        return kind

    def _relation(self, kind: str, relation: str) -> None:
        if relation not in self.model[kind]:
            raise _bad(f"relation '{kind}#{relation}' not found")

    def _user_type(self, user: str) -> str:
        """The user's restriction form: ``user``, ``user:*`` or ``team#member``."""
        head, sep, rel = user.partition("#")
        kind, colon, uid = head.partition(":")
        if not colon or not uid or any(c.isspace() for c in user) or head.count(":") != 1:
            raise _bad(f"invalid 'user' field format: {user!r}")
        if kind not in self.model:
            raise _bad(f"type '{kind}' not found")
        if sep:
            self._relation(kind, rel)
            return f"{kind}#{rel}"
        return f"{kind}:*" if uid == "*" else kind

    def validate(self, t: Tuple) -> None:
        """As OpenFGA validates a written or contextual tuple against the model."""
        kind = self._object(t.object)
        self._relation(kind, t.relation)
        if self._user_type(t.user) not in self.model[kind][t.relation]:
            raise _bad(f"Invalid tuple '{t.object}#{t.relation}@{t.user}'. Reason: type not allowed")

    def allowed(self, user: str, relation: str, obj: str, extra: list[Tuple], depth: int = 0) -> bool:
        if depth > 25:
            raise FgaError(400, "authorization_model_resolution_too_complex", "resolution too complex")
        kind, _, _ = user.partition(":")
        for t in [*self.tuples, *extra]:
            if t.object != obj or t.relation != relation:
                continue
            if t.user == user or (t.user == f"{kind}:*" and "#" not in user):
                return True
            if "#" in t.user:
                userset_obj, _, userset_rel = t.user.partition("#")
                if self.allowed(user, userset_rel, userset_obj, extra, depth + 1):
                    return True
        return False

    def check(self, store_id: str, body: dict[str, Any]) -> bool:
        if store_id != self.store_id:
            raise FgaError(404, "store_id_not_found", "Store ID not found")
        model_id = body.get("authorization_model_id")
        if model_id and model_id != self.model_id:
            raise _bad(f"Authorization Model '{model_id}' not found")
        key = body.get("tuple_key") or {}
        user, relation, obj = key.get("user", ""), key.get("relation", ""), key.get("object", "")
        kind = self._object(obj)
        self._relation(kind, relation)
        self._user_type(user)
        extra = [Tuple(**t) for t in (body.get("contextual_tuples") or {}).get("tuple_keys", [])]
        for t in extra:
            self.validate(t)
        return self.allowed(user, relation, obj, extra)

    # --- HTTP ------------------------------------------------------------------------------

    async def _check(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.checks.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                raise FgaError(401, "unauthenticated", "unauthenticated")
            if self.fail_status is not None:
                raise FgaError(self.fail_status, "internal_error", "Internal Server Error")
            allowed = self.check(request.match_info["store_id"], body)
        except FgaError as err:
            return web.json_response({"code": err.code, "message": err.message}, status=err.status)
        return web.json_response({"allowed": allowed, "resolution": ""})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/stores/{store_id}/check", self._check)
        return app


class RunningFga:
    """An FgaServer on its own loop in a background thread, on a free port."""

    def __init__(self, server: FgaServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the test OpenFGA server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app(), access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        """Stops listening: checks after this get connection refused."""
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def example_tuples() -> list[Tuple]:
    """policies/openfga/tuples.yaml, the example grants docker compose loads."""
    import yaml

    rows = yaml.safe_load((MODEL_FILE.parent / "tuples.yaml").read_text())
    return [Tuple(**row) for row in rows]
