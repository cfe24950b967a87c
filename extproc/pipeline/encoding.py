"""A client body's ``content-encoding``: gzip and deflate are decoded, anything else is a 415.

Decoded, because the gateway must read the body (parse, validate, translate) and sends the
provider plain JSON without the header; the header never goes on beside a body that is no
longer the one it described. Bounded: the decoded body may be at most ``limit`` bytes (the
gateway's ``maxRequestBytes``, which Envoy applies to the encoded bytes), and decoding stops
there, so a small zip bomb costs at most that much memory. Brotli and zstd have no decoder in
the standard library; clients that compress at all use gzip.

Not on routes with an auth policy: the authz sidecar reads the body before this one (the model
for ``modelAccess``) and sees it as sent, so a compressed body would be judged as one naming no
model and then decoded into one that names any. There an encoded body is a 415 too.
"""

from __future__ import annotations

import zlib

from extproc.errors import GatewayError

SUPPORTED = ("gzip", "deflate")
_IDENTITY = frozenset({"", "identity"})
# zlib's window bits: gzip framing, zlib framing (HTTP's "deflate"), and raw deflate, which some
# clients send as "deflate" too.
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS


def codings(header: str | None) -> list[str]:
    """The codings applied to the body, in the order they were applied; [] for a plain body.

    Raises GatewayError (415) for one the gateway cannot decode.
    """
    if not header:
        return []
    found = [c.strip().lower() for c in header.split(",")]
    found = [c for c in found if c not in _IDENTITY]
    found = ["gzip" if c == "x-gzip" else c for c in found]
    unknown = [c for c in found if c not in SUPPORTED]
    if unknown:
        raise GatewayError(
            415,
            f"content-encoding {', '.join(unknown)} is not supported; send the body plain or encoded "
            f"with {' or '.join(SUPPORTED)}",
            code="unsupported_content_encoding",
        )
    return found


def not_on_checked_routes(applied: list[str]) -> GatewayError:
    return GatewayError(
        415,
        f"content-encoding {', '.join(applied)} is not accepted on this route: its access check reads "
        "the body as sent; send the body plain",
        code="unsupported_content_encoding",
    )


def decode(body: bytes, applied: list[str], limit: int) -> bytes:
    """``body`` with ``applied`` undone, last applied first.

    Raises GatewayError: 413 past ``limit`` decoded bytes, 400 for a corrupt body.
    """
    for coding in reversed(applied):
        body = _inflate(body, coding, limit)
    return body


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    if coding == "gzip":
        return _run(data, _GZIP, limit)
    try:
        return _run(data, _ZLIB, limit)
    except GatewayError as err:
        if err.status != 400:
            raise
        return _run(data, _RAW, limit)


def _run(data: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    rest = data
    # gzip allows several members one after the other; each needs a fresh decompressor.
    while rest:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise _corrupt(exc) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise GatewayError(
                413,
                "the request body is larger than this gateway accepts after decoding "
                f"(at most {limit} bytes)",
                code="request_payload_too_large",
            )
        if not inflater.eof:
            raise _corrupt("the compressed body ends early")
        rest = inflater.unused_data if wbits == _GZIP else b""
    return bytes(out)


def _corrupt(reason: object) -> GatewayError:
    return GatewayError(
        400,
        f"the request body is not valid for its content-encoding: {reason}",
        code="invalid_content_encoding",
    )
