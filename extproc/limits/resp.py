"""One multiplexed connection to Redis for the limit stores' per-request scripts.

Redis answers the commands of one connection in the order they were sent, so every request of
the process can share one connection: a command is written as it comes and its reply is the
next one that arrives. No pool to check a connection out of and back into, no lock, no task per
command; concurrent requests are pipelined on the socket. Measured on loopback (one EVALSHA of
the reservation's size): about 33 us of CPU per call, against about 100 us through
redis.asyncio with hiredis and 135 us without (bench/limits.py has the stage's figures).

Kept from redis-py: the URL's meaning (``redis.asyncio.connection.parse_url``: host, port,
``/db``, user and password, ``rediss://``, ``unix://``) and its exception types, so callers
catch the same ``RedisError``. Faults:

- a command with no reply within ``timeout`` fails the connection (redis' ``TimeoutError``) with every
  command behind it (their replies would come after it anyway); the next command connects again;
- a lost connection (Redis restarted, killed) fails what was in flight with ``ConnectionError``;
  ``call`` then tries once more on a new connection, as redis-py's ``Retry(NoBackoff(), 1)`` did;
- a script Redis does not know (``NOSCRIPT``, after a restart or ``SCRIPT FLUSH``) is sent again
  whole (``EVAL``), which also loads it.

RESP2 only (no ``HELLO``): replies are what the scripts return, arrays of bulk strings. The wire
format is hiredis' (its packer and parser); only the multiplexing is this module's.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

Arg = str | bytes | int | float


def pack(args: Sequence[Arg]) -> bytes:
    """A command as RESP2 bulk strings (hiredis' packer)."""
    return hiredis.pack_command(tuple(args))


def reader() -> hiredis.Reader:
    """Replies from a stream of bytes (hiredis' parser): ``gets()`` is False until one is whole;
    an error reply is a ``ResponseError`` value, not raised (an array may hold one)."""
    return hiredis.Reader(replyError=ResponseError)


class _Link(asyncio.Protocol):
    """One connection: the replies it is waiting for, oldest first, each with its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.replies = reader()
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.broken: Exception | None = None
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport subclass (uvloop's is not).
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        fut = self.loop.create_future()
        self.pending.append((fut, self.loop.time() + self.timeout))
        if self._watch is None:
            self._watch = self.loop.call_at(self.pending[0][1], self._check)
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        try:
            self.replies.feed(data)
            while self.pending:
                value = self.replies.gets()
                if value is False:  # the rest of the reply is still on its way
                    break
                fut = self.pending.popleft()[0]
                if not fut.done():
                    fut.set_result(value)
        except Exception as exc:  # a reply this client cannot read: the stream is lost
            self.fail(ConnectionError(f"unreadable reply from Redis: {exc}"))

    def _check(self) -> None:
        """One timer per connection, not one per command: the oldest command's deadline."""
        self._watch = None
        if not self.pending:
            return
        deadline = self.pending[0][1]
        if deadline <= self.loop.time():
            self.fail(RedisTimeout(f"Redis did not answer within {self.timeout:g}s"))
        else:
            self._watch = self.loop.call_at(deadline, self._check)

    def eof_received(self) -> None:
        # Broken from now on, not once the transport has closed: no command is written after it.
        self.fail(ConnectionError("Redis closed the connection"))

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"connection to Redis lost: {exc}" if exc else "Redis closed the connection"
        self.fail(ConnectionError(why))

    def fail(self, exc: Exception) -> None:
        if self.broken is None:
            self.broken = exc
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.pending:
            fut = self.pending.popleft()[0]
            if not fut.done():
                fut.set_exception(type(exc)(str(exc)))
        if self.transport is not None:
            self.transport.abort()


class RespClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.options = parse_url(url)
        self.timeout = timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None

    async def call(self, *args: Arg) -> Any:
        """One command's reply; a Redis error reply is raised (``ResponseError``)."""
        return await self.send(*args)

    def send(self, *args: Arg) -> Awaitable[Any]:
        """``call``, with the command written before this returns when the connection is up, so
        the caller can work while Redis answers; await the result (always: it holds the reply)."""
        data = pack(args)
        link = self._link
        if link is None or link.broken is not None:
            return self._reply(None, data)  # written once connected, when awaited
        return self._reply(link.send(data), data)

    async def _reply(self, sent: asyncio.Future[Any] | None, data: bytes) -> Any:
        try:
            if sent is None:
                sent = (await self._ready()).send(data)
            got = await sent
        except ConnectionError:  # once more on a new connection (a restart breaks the old one)
            got = await (await self._ready()).send(data)
        if isinstance(got, ResponseError):
            raise got
        return got

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await self.send_script(script, keys, args)

    def send_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Awaitable[Any]:
        """EVALSHA, written now as ``send`` writes; a script Redis does not know is sent whole."""
        sent = self.send(b"EVALSHA", script.sha, len(keys), *keys, *args)
        return self._script_reply(sent, script, keys, args)

    async def _script_reply(
        self, sent: Awaitable[Any], script: Script, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Any:
        try:
            return await sent
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call(b"EVAL", script.text, len(keys), *keys, *args)

    async def _ready(self) -> _Link:
        link = self._link
        if link is not None and link.broken is None:
            return link
        self._link = None
        if self._connecting is None:  # the callers arriving meanwhile wait for the same one
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        task = self._connecting
        try:
            link = await asyncio.shield(task)
        finally:
            if self._connecting is task and task.done():
                self._connecting = None
        self._link = link
        return link

    async def _connect(self) -> _Link:
        o = self.options
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                if o.get("connection_class") is UnixDomainSocketConnection:
                    _, link = await loop.create_unix_connection(lambda: _Link(self.timeout), o["path"])
                else:
                    _, link = await loop.create_connection(
                        lambda: _Link(self.timeout), o.get("host", "localhost"), o.get("port", 6379),
                        ssl=_tls(o) if o.get("connection_class") is SSLConnection else None,
                    )  # fmt: skip
                hello: list[asyncio.Future[Any]] = []
                if o.get("password") is not None:
                    user = o.get("username")
                    auth = (b"AUTH", user, o["password"]) if user else (b"AUTH", o["password"])
                    hello.append(link.send(pack(auth)))
                if o.get("db"):
                    hello.append(link.send(pack((b"SELECT", o["db"]))))
                for got in await asyncio.gather(*hello):
                    if isinstance(got, ResponseError):
                        link.fail(ConnectionError(str(got)))
                        raise ConnectionError(f"Redis refused the connection: {got}")
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot connect to Redis: {exc or type(exc).__name__}") from None
        return link

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
        self._link = None


class Script:
    """A Lua script, named by its SHA1 for EVALSHA."""

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()


def _tls(options: dict[str, Any]) -> ssl.SSLContext:
    """``rediss://``: verified by default; ``?ssl_cert_reqs=none`` (redis-py's option) turns it off."""
    ctx = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
