"""The limit stores' multiplexed Redis connection (extproc/limits/resp.py): replies read in pieces,
matched to their commands in order, and its faults (timeouts, lost connections, unknown scripts),
against a real redis-server and a scripted fake one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from extproc.limits.resp import RespClient, Script, pack, reader
from tests.redis_server import RedisServer, start_redis

REPLIES = [
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b":-42\r\n", -42),
    (b"+OK\r\n", b"OK"),
    (b"*3\r\n$1\r\n1\r\n*2\r\n:7\r\n$2\r\nab\r\n$-1\r\n", [b"1", [7, b"ab"], None]),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string holding CRLF is read by its length
]


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_a_reply_is_read_whole_and_never_from_a_piece(wire: bytes, value: object) -> None:
    for cut in range(len(wire)):
        r = reader()
        r.feed(wire[:cut])
        assert r.gets() is False
        r.feed(wire[cut:] + b"+next\r\n")
        assert r.gets() == value and r.gets() == b"next"


def test_an_error_reply_is_a_value_and_a_command_is_bulk_strings() -> None:
    r = reader()
    r.feed(b"-NOSCRIPT No matching script\r\n")
    got = r.gets()
    assert isinstance(got, ResponseError) and str(got) == "NOSCRIPT No matching script"
    assert pack(["GET", b"k", 3, 1.5]) == b"*4\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\n3\r\n$3\r\n1.5\r\n"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    redis_server: RedisServer,
) -> None:
    async def body() -> None:
        client = RespClient(redis_server.url, 2.0)
        try:
            got = await asyncio.gather(*(client.call("ECHO", f"value-{i}" * (i % 50)) for i in range(300)))
            assert got == [(f"value-{i}" * (i % 50)).encode() for i in range(300)]
            listed = await client.call("CLIENT", "LIST")
            assert listed.count(b"cmd=client") == 1  # this client: one connection, no pool
        finally:
            await client.close()

    asyncio.run(body())


def test_a_script_redis_forgot_is_sent_whole_again(redis_server: RedisServer) -> None:
    async def body() -> None:
        client = RespClient(redis_server.url, 2.0)
        script = Script("return {KEYS[1], ARGV[1]}")
        try:
            assert await client.evalsha(script, ["k"], ["a"]) == [b"k", b"a"]
            await client.call("SCRIPT", "FLUSH")  # as after a restart
            assert await client.evalsha(script, ["k"], ["b"]) == [b"k", b"b"]
            assert await client.call("SCRIPT", "EXISTS", script.sha) == [1]  # EVAL loaded it
            with pytest.raises(ResponseError):
                await client.evalsha(Script("return redis.call('NOPE')"), [], [])
        finally:
            await client.close()

    asyncio.run(body())


# --- a scripted server, for what a real Redis does not do on demand ---------------------------

Handler = Callable[[list[bytes], asyncio.StreamWriter, int], Awaitable[None]]


class FakeRedis:
    """Reads commands, hands each to ``handler`` (with the connection's number)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        commands = reader()  # a command is an array of bulk strings: read as a reply would be
        try:
            while data := await stream.read(65536):
                commands.feed(data)
                while (command := commands.gets()) is not False:
                    self.commands.append(command)
                    await self.handler(command, writer, number)
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _ok(command: list[bytes], writer: asyncio.StreamWriter, number: int) -> None:
    writer.write(b"+OK\r\n")


def test_auth_and_the_database_come_from_the_url() -> None:
    async def body() -> None:
        fake = FakeRedis(_ok)
        async with fake as where:
            client = RespClient(f"redis://bob:s3cret@{where}/3", 1.0)
            assert await client.call("PING") == b"OK"
            await client.close()
        assert fake.commands == [[b"AUTH", b"bob", b"s3cret"], [b"SELECT", b"3"], [b"PING"]]

    asyncio.run(body())


def test_a_refused_password_is_a_connection_error() -> None:
    async def refuse(command: list[bytes], writer: asyncio.StreamWriter, number: int) -> None:
        writer.write(b"-WRONGPASS invalid username-password pair\r\n")

    async def body() -> None:
        async with FakeRedis(refuse) as where:
            client = RespClient(f"redis://:nope@{where}/0", 1.0)
            with pytest.raises(ConnectionError, match="WRONGPASS"):
                await client.call("PING")
            await client.close()

    asyncio.run(body())


def test_no_answer_is_a_timeout_for_everything_in_flight_and_the_next_call_reconnects() -> None:
    async def silent_first(command: list[bytes], writer: asyncio.StreamWriter, number: int) -> None:
        if number > 1:
            writer.write(b"+PONG\r\n")

    async def body() -> None:
        fake = FakeRedis(silent_first)
        async with fake as where:
            client = RespClient(f"redis://{where}/0", 0.2)
            started = time.monotonic()
            got = await asyncio.gather(client.call("PING"), client.call("PING"), return_exceptions=True)
            assert all(isinstance(g, RedisTimeout) for g in got), got
            assert 0.15 < time.monotonic() - started < 1.0  # one timeout, not one per command
            assert await client.call("PING") == b"PONG"  # no restart needed
            assert fake.connections == 2
            await client.close()

    asyncio.run(body())


def test_a_connection_lost_in_flight_is_tried_once_more_on_a_new_one() -> None:
    async def hang_up_first(command: list[bytes], writer: asyncio.StreamWriter, number: int) -> None:
        if number == 1:
            writer.transport.abort()
        else:
            writer.write(b"+PONG\r\n")

    async def always_hang_up(command: list[bytes], writer: asyncio.StreamWriter, number: int) -> None:
        writer.transport.abort()

    async def body() -> None:
        async with FakeRedis(hang_up_first) as where:
            client = RespClient(f"redis://{where}/0", 1.0)
            assert await client.call("PING") == b"PONG"
            await client.close()
        fake = FakeRedis(always_hang_up)
        async with fake as where:
            client = RespClient(f"redis://{where}/0", 1.0)
            with pytest.raises(ConnectionError):
                await client.call("PING")
            assert fake.connections == 2  # one retry, not more
            await client.close()

    asyncio.run(body())


def test_nothing_listening_is_a_connection_error() -> None:
    async def body() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = RespClient(f"redis://127.0.0.1:{port}/0", 0.5)
        with pytest.raises(ConnectionError):
            await client.call("PING")
        await client.close()

    asyncio.run(body())
