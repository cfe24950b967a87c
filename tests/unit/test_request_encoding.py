"""A client body's content-encoding: decoded within the body limit, or refused (pipeline.encoding)."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib

import pytest

from extproc import egress
from extproc.errors import GatewayError
from extproc.pipeline import encoding, outbound

from .edge import routes

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


def raw_deflate(data: bytes) -> bytes:
    """Deflate without zlib's header, as some clients send ``deflate``."""
    out = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return out.compress(data) + out.flush()


@pytest.mark.parametrize(
    ("header", "encoded"),
    [
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        ("GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", raw_deflate(BODY)),
        ("gzip, deflate", zlib.compress(gzip.compress(BODY))),
        ("identity", BODY),
        ("", BODY),
    ],
)
def test_gzip_and_deflate_are_decoded(header: str, encoded: bytes) -> None:
    assert encoding.decode(encoded, encoding.codings(header), 1024) == BODY


def test_concatenated_gzip_members_are_one_body() -> None:
    encoded = gzip.compress(BODY[:10]) + gzip.compress(BODY[10:])
    assert encoding.decode(encoded, ["gzip"], 1024) == BODY


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, br", "snappy"])
def test_other_encodings_are_a_415_naming_what_is_supported(header: str) -> None:
    with pytest.raises(GatewayError) as info:
        encoding.codings(header)
    assert info.value.status == 415
    assert "gzip or deflate" in info.value.message


def test_a_zip_bomb_stops_at_the_limit() -> None:
    # 1 GB of zeros in about 1 MB: decoding must stop at the limit, in well under a second.
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    bomb = b"".join(inflater.compress(chunk) for _ in range(1024)) + inflater.flush()
    started = time.monotonic()
    with pytest.raises(GatewayError) as info:
        encoding.decode(bomb, ["gzip"], 256 * 1024)
    assert info.value.status == 413
    assert time.monotonic() - started < 1.0


def test_a_body_of_exactly_the_limit_decodes() -> None:
    assert len(encoding.decode(gzip.compress(b"a" * 1000), ["gzip"], 1000)) == 1000
    with pytest.raises(GatewayError):
        encoding.decode(gzip.compress(b"a" * 1001), ["gzip"], 1000)


@pytest.mark.parametrize("encoded", [b"not gzip", gzip.compress(BODY)[:-12], b"\x1f\x8b"])
def test_a_corrupt_or_cut_body_is_a_400(encoded: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        encoding.decode(encoded, ["gzip"], 1024)
    assert info.value.status == 400 and info.value.code == "invalid_content_encoding"


def test_content_encoding_goes_on_only_beside_a_passthrough_body() -> None:
    """A passthrough body is the client's own: its encoding header stays with it. An LLM request's
    body is decoded or the gateway's own: the header never goes beside it."""
    up = routes("completions")[0].backends[0].upstreams[0]
    headers = {":path": "/v1/files", "content-encoding": "gzip", "content-type": "application/json"}

    async def build(api: str, parsed: dict | None) -> outbound.Outbound:
        return await outbound.build(up, api, "POST", "/v1/files", parsed, BODY, headers)

    assert "content-encoding" not in asyncio.run(build("passthrough", None)).remove_headers
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert "content-encoding" in asyncio.run(build("completions", chat)).remove_headers
    assert egress.passthrough_attempt(up, "/v1/files").body is None
