"""JSON Web Key Sets for jwtAuth: parsed once into an immutable KeySet, from inline JSON, a file
(reloaded on change) or a URL (cached, refreshed before it expires, refetched on an unknown kid).

A source only ever swaps one whole, fully parsed KeySet for another: a document that fails to
parse (a half-written file, a truncated response) leaves the last good set in place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from extproc.authz.mechanism import AuthContext
from extproc.config.auth import Jwks, JwksFile, JwksUrl
from extproc.config.base import parse_duration

log = logging.getLogger("gateway.authz.jwks")

# The algorithms each key type can verify. HMAC ("oct" keys) is absent on purpose: a JWKS holds
# public keys, and a shared secret published in one is no secret.
_FAMILY: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC:P-256": ("ES256",),
    "EC:P-384": ("ES384",),
    "EC:P-521": ("ES512",),
    "OKP:Ed25519": ("EdDSA",),
    "OKP:Ed448": ("EdDSA",),
}
MAX_JWKS_BYTES = 1 << 20  # a real key set is a few KiB


class JwksError(ValueError):
    """A key set document that cannot be used (the message names the field)."""


@dataclass(frozen=True)
class Key:
    kid: str | None
    kind: str  # "RSA", "EC:P-256", "OKP:Ed25519"
    by_alg: dict[str, PyJWK]  # a verifier per algorithm this key may be used with

    def for_alg(self, alg: str) -> PyJWK | None:
        return self.by_alg.get(alg)


class KeySet:
    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self._by_kid = {k.kid: k for k in keys if k.kid is not None}

    def find(self, kid: str | None) -> list[Key]:
        """The key named ``kid``; a token without a kid may be signed by any of them."""
        if kid is None:
            return list(self.keys)
        key = self._by_kid.get(kid)
        return [key] if key is not None else []

    @property
    def kids(self) -> list[str]:
        return sorted(self._by_kid)


def parse_jwks(doc: Any) -> KeySet:
    """A KeySet from a JWKS document (bytes, str or the decoded object). Keys for encryption
    (``use: enc``), symmetric keys and unknown types are skipped; a malformed signing key fails
    the whole document, so a broken set never replaces a good one with fewer keys."""
    if isinstance(doc, bytes | str):
        try:
            doc = orjson.loads(doc)
        except orjson.JSONDecodeError as exc:
            raise JwksError(f"not JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError('not a JSON Web Key Set: expected {"keys": [...]}')
    keys: list[Key] = []
    for i, jwk in enumerate(doc["keys"]):
        key = _parse_key(jwk, f"keys[{i}]")
        if key is not None:
            keys.append(key)
    if not keys:
        raise JwksError("no usable signing keys (RSA, EC or OKP keys with use 'sig')")
    return KeySet(keys)


def _parse_key(jwk: Any, where: str) -> Key | None:
    if not isinstance(jwk, dict):
        raise JwksError(f"{where}: not a JSON object")
    if jwk.get("use", "sig") != "sig":
        return None  # Keycloak publishes its RSA-OAEP encryption key alongside the signing keys
    kty = jwk.get("kty")
    kind = str(kty)
    if kty == "EC":
        kind = f"EC:{jwk.get('crv', 'P-256')}"  # pyjwt's default curve too
    elif kty == "OKP":
        kind = f"OKP:{jwk.get('crv')}"
    family = _FAMILY.get(kind)
    if family is None:
        return None  # "oct" (HMAC) and types pyjwt cannot verify
    declared = jwk.get("alg")
    if declared is not None and declared not in family:
        return None  # e.g. an RSA key declared for RSA-OAEP without a `use`
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JwksError(f"{where}.kid: not a string")
    algs = (declared,) if declared else family
    try:
        by_alg = {alg: PyJWK(jwk, alg) for alg in algs}
    except (PyJWTError, TypeError, ValueError) as exc:
        # pyjwt's messages quote the whole JWK: name the key instead.
        raise JwksError(f"{where} (kid {kid!r}): not a valid {kty} key ({type(exc).__name__})") from None
    return Key(kid, kind, by_alg)


# --- sources ------------------------------------------------------------------------------------


class JwksSource:
    """Where a provider's keys come from. ``keyset`` is None until a first good load."""

    label = "inline"
    keyset: KeySet | None = None

    async def start(self) -> None:
        """Load once and start any watcher (idempotent: routes share sources)."""

    async def lookup(self, kid: str | None) -> list[Key]:
        """Keys that may have signed a token with ``kid``; [] if none (or nothing loaded)."""
        return self.keyset.find(kid) if self.keyset is not None else []


class InlineJwks(JwksSource):
    def __init__(self, doc: str | dict[str, Any]) -> None:
        try:
            self.keyset = parse_jwks(doc)
        except JwksError as exc:
            # Checked in the config already (shape); key material only here. No keys: 503s.
            log.error("jwtAuth: the inline jwks is unusable: %s", exc)


class FileJwks(JwksSource):
    """A JWKS file, polled for changes about once a second; read and parsed off the loop."""

    poll_seconds = 1.0

    def __init__(self, path: str, ctx: AuthContext) -> None:
        self.path = str(ctx.path(path))
        self.label = self.path
        self._ctx = ctx
        self._seen: tuple[int, int] | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.reload()
        self._ctx.spawn(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.reload()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("jwtAuth: reloading %s failed", self.path)

    async def reload(self) -> None:
        stamp, data = await asyncio.to_thread(_read_stable, self.path)
        if stamp is None:
            if self._seen != (-1, -1):
                log.error("jwtAuth: jwks file %s is missing (keeping the last good key set)", self.path)
                self._seen = (-1, -1)
            return
        if data is None or stamp == self._seen:
            return  # unchanged, or changing while read: the next poll reads it whole
        self._seen = stamp
        try:
            keyset = await asyncio.to_thread(parse_jwks, data)
        except JwksError as exc:
            log.error("jwtAuth: jwks file %s: %s (keeping the last good key set)", self.path, exc)
            return
        self.keyset = keyset
        log.info("jwtAuth: loaded %d keys from %s", len(keyset.keys), self.path)


def _read_stable(path: str) -> tuple[tuple[int, int] | None, bytes | None]:
    """(mtime_ns, size) and the content, or no content when the file changed while being read."""
    try:
        before = os.stat(path)
        with open(path, "rb") as f:
            data = f.read(MAX_JWKS_BYTES + 1)
        after = os.stat(path)
    except FileNotFoundError:
        return None, None
    stamp = (after.st_mtime_ns, after.st_size)
    if (before.st_mtime_ns, before.st_size) != stamp or len(data) != after.st_size:
        return stamp, None
    return stamp, data


class UrlJwks(JwksSource):
    """A JWKS URL (an IdP's ``.../protocol/openid-connect/certs``). Used for ``cache_seconds``,
    refreshed in the background before that runs out; kept as it is while the URL is down. An
    unknown kid refetches at once, at most once per ``kid_refetch_seconds``, one fetch at a time."""

    kid_refetch_seconds = 10.0
    kid_wait_seconds = 1.0  # well under Envoy's ext_authz timeout (sidecarTimeout)
    fetch_timeout = 5.0

    def __init__(self, url: str, cache_seconds: float, ctx: AuthContext) -> None:
        self.url = url
        self.label = url
        self.cache_seconds = cache_seconds
        self._ctx = ctx
        self._inflight: asyncio.Future[bool] | None = None
        self._last_kid_fetch = -float("inf")
        self._failures = 0
        self._started = False
        self.fetches = 0  # attempts, for tests and logs

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.refresh()
        self._ctx.spawn(self._refresher())

    async def lookup(self, kid: str | None) -> list[Key]:
        found = await super().lookup(kid)
        if found:
            return found
        now = time.monotonic()
        # A fetch under way is as new as any: join it. Otherwise fetch, unless one was just made.
        if self._inflight is not None or now - self._last_kid_fetch >= self.kid_refetch_seconds:
            if self._inflight is None:
                self._last_kid_fetch = now
            try:
                # A slow IdP holds this request for kid_wait_seconds at most; the fetch goes on.
                await asyncio.wait_for(self.refresh(), self.kid_wait_seconds)
            except TimeoutError:
                log.warning("jwtAuth: %s is slow to answer; checking with the keys at hand", self.url)
        return await super().lookup(kid)

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch under way (single flight). True if a new set was loaded."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, _: asyncio.Future[bool]) -> None:
        self._inflight = None

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay())
            try:
                await self.refresh()
            except Exception:
                log.exception("jwtAuth: refreshing %s failed", self.url)

    def _next_delay(self) -> float:
        if self._failures == 0 and self.keyset is not None:
            # Before the cache runs out, so a key the IdP retires is dropped on time.
            return max(1.0, self.cache_seconds * 0.8)
        # Backing off while the IdP is down, never longer than the cache itself.
        return min(2.0 ** min(self._failures, 6), max(1.0, self.cache_seconds))

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            data = await self._get()
            keyset = await asyncio.to_thread(parse_jwks, data)
        except (aiohttp.ClientError, TimeoutError, JwksError) as exc:
            self._failures += 1
            kept = "keeping the cached keys" if self.keyset is not None else "no keys yet"
            log.warning("jwtAuth: fetching %s failed: %s (%s)", self.url, _describe(exc), kept)
            return False
        self._failures = 0
        if self.keyset is None or self.keyset.kids != keyset.kids:
            log.info("jwtAuth: %s has keys %s", self.url, keyset.kids)
        self.keyset = keyset
        return True

    async def _get(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        async with self._ctx.session().get(self.url, timeout=timeout) as resp:
            if resp.status != 200:
                raise JwksError(f"HTTP {resp.status}")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > MAX_JWKS_BYTES:
                    raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
            return bytes(data)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def jwks_source(spec: Jwks, ctx: AuthContext) -> JwksSource:
    """The source for a provider's ``jwks``. Files and URLs are shared by every route of this
    sidecar, so one URL is fetched (and rate-limited) once, however many routes name it."""
    if isinstance(spec, str | dict):
        return InlineJwks(spec)
    # AuthContext is the sidecar's one shared object; the registry lives on it so that a test's
    # fresh context starts with fresh sources.
    shared: dict[tuple[str, str], JwksSource] = ctx.__dict__.setdefault("_jwks_sources", {})
    if isinstance(spec, JwksFile):
        path = str(ctx.path(spec.file))
        return shared.setdefault(("file", path), FileJwks(path, ctx))
    assert isinstance(spec, JwksUrl)
    source = shared.get(("url", spec.url))
    if source is None:
        source = UrlJwks(spec.url, parse_duration(spec.cache_duration), ctx)
        shared[("url", spec.url)] = source
    return source
