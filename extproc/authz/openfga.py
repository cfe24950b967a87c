"""OpenFGA: may this caller use this model? One Check per request, through openfga-sdk.

The tuple is filled from templates: ``{user}`` (the caller's subject), ``{api_key}`` (its key id),
``{group}`` (its team, else its first group) and ``{model}`` (the model the request will use, after
aliases), for example ``user:alice can_use llm_model:gpt-4o``. The caller's groups go along as
contextual tuples (``user:alice member team:eng``), so the store need not mirror the identity
provider. Values are escaped for OpenFGA's ids (``:``, ``#``, ``%`` and whitespace as ``%XX``:
Bedrock's ``...-v1:0`` is ``llm_model:...-v1%3A0``), so no client-chosen model can change the tuple.

- No user can be formed (an anonymous caller when the user template needs ``{user}``, a key with no
  owner): 403, there is nobody to ask about. A template without placeholders (``user:*``) asks
  about everyone, and serves anonymous callers.
- No model on a request that needs one: the route's only configured model if it has exactly one,
  else 403 (a check that cannot name the model must not pass).
- The server down, slow (``timeout`` bounds the whole check, the SDK's retries included) or
  answering an error: 503, fail closed. Decisions (not errors) are cached for ``cacheTtl``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from openfga_sdk import ClientConfiguration, OpenFgaClient
from openfga_sdk.client.models import ClientCheckRequest, ClientTuple
from openfga_sdk.configuration import RetryParams
from openfga_sdk.credentials import CredentialConfiguration, Credentials
from openfga_sdk.exceptions import ApiException, FgaValidationException

from extproc.authz.caller import Caller, Forbidden, Grant, Unavailable
from extproc.authz.decision_cache import DecisionCache
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest
from extproc.config.auth import OPENFGA_FIELDS, OpenFgaPolicy, template_fields
from extproc.config.base import parse_duration
from extproc.gateway import resolve_secret

log = logging.getLogger("gateway.authz.openfga")

FIELDS = OPENFGA_FIELDS
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# OpenFGA's limits on a tuple's object and user; longer ones cannot be in any tuple.
_MAX_OBJECT, _MAX_USER = 256, 512
# OpenFGA takes at most 100 contextual tuples per check.
_MAX_GROUPS = 100
# Concurrent checks when filtering the models listing.
_LISTING_PARALLEL = 10


def escape(value: str) -> str:
    """A value as an OpenFGA id part: ``:``, ``#``, ``%``, whitespace and control characters as
    ``%XX`` (an object is exactly ``type:id``); everything else as it is."""
    return "".join(
        c if c.isprintable() and not c.isspace() and c not in "%:#" else quote(c, safe="") for c in value
    )


class Template:
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.fields = template_fields(text, where)

    def fill(self, values: dict[str, str]) -> str | None:
        """The filled template, or None when a placeholder it needs has no value."""
        if any(not values.get(f) for f in self.fields):
            return None
        return _PLACEHOLDER.sub(lambda m: escape(values[m.group(1)]), self.text)


@dataclass(frozen=True)
class CheckKey:
    """One Check, and its cache key."""

    user: str
    relation: str
    object: str
    contextual: tuple[tuple[str, str, str], ...] = ()  # (user, relation, object), sorted


class OpenFgaAuthorizer:
    name = "openfga"

    def __init__(self, policy: OpenFgaPolicy, ctx: AuthContext) -> None:
        self.policy = policy
        self.ctx = ctx
        self.user = Template(policy.user, "user")
        self.relation = Template(policy.relation, "relation")
        self.object = Template(policy.object, "object")
        self.group_object: Template | None = None
        self.group_relation = ""
        if policy.group_tuple:
            obj, sep, relation = policy.group_tuple.rpartition("#")
            if not sep or not obj or not relation:
                raise ValueError(
                    f"openfga groupTuple: expected 'type:{{group}}#relation', got {policy.group_tuple!r}"
                )
            self.group_object, self.group_relation = Template(obj, "groupTuple"), relation
        self.timeout = parse_duration(policy.timeout)
        self.cache = DecisionCache(parse_duration(policy.cache_ttl))
        self._client: OpenFgaClient | None = None
        self._problem: str | None = None  # why no client can be made (logged once, every check 503)

    # --- the client --------------------------------------------------------------------------

    async def start(self) -> None:
        self._connect()

    def _configuration(self) -> ClientConfiguration:
        store_id = _setting(self.policy.store_id, "storeId")
        model_id = _setting(self.policy.authorization_model_id, "authorizationModelId")
        token = _setting(self.policy.api_token, "apiToken")
        credentials = None
        if token:
            credentials = Credentials(
                method="api_token", configuration=CredentialConfiguration(api_token=token)
            )
        ms = max(1, int(self.timeout * 1000))
        return ClientConfiguration(
            api_url=self.policy.url.rstrip("/"),
            store_id=store_id,
            authorization_model_id=model_id or None,
            credentials=credentials,
            # One quick retry on 429/5xx (the SDK's default is 3 with backoff); the check's own
            # timeout bounds the whole, retries and any Retry-After included.
            retry_params=RetryParams(max_retry=1, min_wait_in_ms=min(50, max(1, ms // 10))),
            timeout_millisec=ms,
        )

    def _connect(self) -> OpenFgaClient | None:
        """The client, made on first use in the serving loop (its aiohttp session binds to it)."""
        if self._client is None and self._problem is None:
            try:
                self._client = OpenFgaClient(self._configuration())
            except (ValueError, FgaValidationException) as exc:
                self._problem = str(exc)
                log.error("openfga policy (%s): %s; its checks answer 503", self.policy.url, exc)
                return None
            self.ctx.spawn(self._close_on_shutdown(self._client))
        return self._client

    @staticmethod
    async def _close_on_shutdown(client: OpenFgaClient) -> None:
        # A task AuthContext.close() cancels: closes the SDK's own HTTP session then.
        try:
            await asyncio.Event().wait()
        finally:
            await client.close()

    # --- one decision ------------------------------------------------------------------------

    def _values(self, caller: Caller, model: str) -> dict[str, str]:
        group = caller.team or (caller.groups[0] if caller.groups else "")
        return {"user": caller.subject, "api_key": caller.api_key_id, "group": group, "model": model}

    def key(self, caller: Caller, model: str) -> CheckKey | None:
        """The Check for this caller and model; None when the templates cannot be filled (no
        user, say) or fill an id too long for any tuple: nothing to ask, so not allowed."""
        values = self._values(caller, model)
        user = self.user.fill(values)
        if user is None or len(user) > _MAX_USER:
            return None
        relation = self.relation.fill(values)
        obj = self.object.fill(values)
        if relation is None or obj is None or len(obj) > _MAX_OBJECT:
            return None
        contextual: set[tuple[str, str, str]] = set()
        if self.group_object is not None:
            for group in sorted(set(caller.groups))[:_MAX_GROUPS]:
                group_obj = self.group_object.fill({**values, "group": group})
                if group_obj is not None and len(group_obj) <= _MAX_OBJECT:
                    contextual.add((user, self.group_relation, group_obj))
        return CheckKey(user, relation, obj, tuple(sorted(contextual)))

    async def check(self, key: CheckKey) -> bool:
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        client = self._connect()
        if client is None:
            raise Unavailable("authorization is unavailable: this route's access check is misconfigured")
        contextual = [ClientTuple(user=u, relation=r, object=o) for u, r, o in key.contextual]
        body = ClientCheckRequest(
            user=key.user, relation=key.relation, object=key.object, contextual_tuples=contextual or None
        )
        try:
            async with asyncio.timeout(self.timeout):
                answer: Any = await client.check(body)
        except TimeoutError:
            log.warning("openfga: no answer from %s within %.3gs", self.policy.url, self.timeout)
            raise Unavailable("authorization is unavailable: the access check timed out") from None
        except ApiException as exc:
            log.warning("openfga: %s answered HTTP %s %s", self.policy.url, exc.status, exc.code or "")
            raise Unavailable("authorization is unavailable: the access check could not be made") from None
        except Exception as exc:  # connection refused, DNS, a broken answer: never an unchecked pass
            log.warning("openfga: check against %s failed: %s: %s", self.policy.url, type(exc).__name__, exc)
            raise Unavailable("authorization is unavailable: the access check could not be made") from None
        allowed = getattr(answer, "allowed", None) is True
        self.cache.put(key, allowed)
        return allowed

    # --- the Authorizer and ModelFilter ------------------------------------------------------

    def _model(self, req: AuthRequest) -> str:
        if req.model:
            return req.model
        models = req.route.models() if req.route is not None else []
        return models[0][0] if len(models) == 1 else ""

    async def authorize(self, req: AuthRequest, caller: Caller) -> Grant | None:
        if req.lists_models:
            return None  # allowed_models filters the listing instead
        model = self._model(req)
        if "model" in self._fields and not model:
            raise Forbidden("this route's access check needs the request's model", code="model_not_allowed")
        key = self.key(caller, model)
        who = _who(caller)
        if key is None:
            raise Forbidden(f"model {model!r} is not allowed for {who}", code="model_not_allowed")
        if not await self.check(key):
            raise Forbidden(f"model {model!r} is not allowed for {who}", code="model_not_allowed")
        return None

    async def allowed_models(self, req: AuthRequest, caller: Caller, models: list[str]) -> list[str]:
        """Concurrent cached Checks, one per model: each decision is cached as a request's is, so
        listing then using a model asks once. Any check failing makes the listing 503."""
        gate = asyncio.Semaphore(_LISTING_PARALLEL)

        async def one(model: str) -> bool:
            key = self.key(caller, model)
            if key is None:
                return False
            async with gate:
                return await self.check(key)

        answers = await asyncio.gather(*(one(m) for m in models), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return [m for m, ok in zip(models, answers, strict=True) if ok is True]

    @property
    def _fields(self) -> set[str]:
        return self.user.fields | self.relation.fields | self.object.fields


def _setting(value: str | None, what: str) -> str | None:
    """A literal or ``$ENV_VAR`` (as backendAuth keys are); an unset variable is a config error."""
    resolved, missing = resolve_secret(value)
    if missing is not None:
        raise ValueError(f"{what}: the environment variable {missing} is not set")
    return resolved


def _who(caller: Caller) -> str:
    if caller.api_key_id:
        return f"API key {caller.api_key_id}"
    return caller.subject or "anonymous callers"
