"""Can the response-headers message go? What Envoy does when a sidecar tries, probed (issue 7).

Skipping the response headers message would save one ext_proc message per request, but which
body mode the answer needs (BUFFERED for a whole answer, streamed for a stream) is known only once
the request body is read, and a ``mode_override`` counts only in the answer to a headers message.
So the probe's sidecar holds its answer to the request headers until it has the request body
(request body STREAMED with ``send_body_without_waiting_for_header_response``), then answers the
headers with a ``:path`` change and a ``mode_override`` (response headers SKIP, body as asked), and
answers the response body with header changes. Printed: the messages the sidecar got, with the
attributes each carried, and what the client got. Envoy 1.40 showed:

- the request body comes as two messages (the bytes, then an empty end of stream): one more;
- ``override``: the ``:path`` change applies, the ``mode_override`` does not (no response message);
- ``BUFFERED``, the response modes in the filter config instead: one body message with every
  response attribute, but its header changes are not applied (Envoy has sent the headers on,
  without content-length);
- ``STREAMED``: two body messages, and no header changes either.

    .venv/bin/python bench/mode_probe.py override   # filter config: no response; the override asks
    .venv/bin/python bench/mode_probe.py BUFFERED   # filter config: response headers SKIP, body BUFFERED
    .venv/bin/python bench/mode_probe.py STREAMED
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys  # noqa: E402
from bench.run import _end  # noqa: E402

_MODE = processing_mode_pb2.ProcessingMode
_ATTRS = "envoy.filters.http.ext_proc"


def _attributes(msg: pb.ProcessingRequest) -> dict[str, str]:
    got = msg.attributes.get(_ATTRS)
    return {k: str(v).strip().replace("\n", " ") for k, v in got.fields.items()} if got else {}


def _set(common: pb.CommonResponse, key: str, value: str) -> None:
    option = common.header_mutation.set_headers.add(
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    option.header.key, option.header.raw_value = key, value.encode()


class Prober(pb_grpc.ExternalProcessorServicer):
    def __init__(self, body_mode: str) -> None:
        self.body_mode = "BUFFERED" if body_mode == "override" else body_mode

    async def Process(
        self, messages: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        it = messages.__aiter__()
        first = await anext(it)
        print("got request_headers", _attributes(first), flush=True)
        chunks = []
        while not first.request_headers.end_of_stream:
            msg = await anext(it)
            print(
                f"got request_body of {len(msg.request_body.body)} bytes, end {msg.request_body.end_of_stream}",
                flush=True,
            )
            chunks.append(msg)
            if msg.request_body.end_of_stream:
                break
        resp = pb.ProcessingResponse()
        common = resp.request_headers.response
        _set(common, ":path", "/v1/messages")  # the bench upstream answers it with a Messages body
        common.clear_route_cache = True
        resp.mode_override.CopyFrom(
            _MODE(
                request_header_mode=_MODE.SEND,
                request_body_mode=_MODE.STREAMED,
                response_header_mode=_MODE.SKIP,
                response_body_mode=getattr(_MODE, self.body_mode),
            )
        )
        yield resp
        for _ in chunks:
            resp = pb.ProcessingResponse()
            resp.request_body.response.SetInParent()
            yield resp
        async for msg in it:
            kind = msg.WhichOneof("request")
            end = getattr(msg, kind).end_of_stream if kind.endswith("body") else ""
            print(f"got {kind}, end {end}", _attributes(msg), flush=True)
            resp = pb.ProcessingResponse()
            common = getattr(resp, kind).response
            common.SetInParent()
            if kind == "response_body":
                _set(common, "x-probe", "set by the body answer")
            yield resp


async def _serve(port: int, body_mode: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(Prober(body_mode), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    body_mode = sys.argv[1] if len(sys.argv) > 1 else "override"
    if "--serve" in sys.argv:
        asyncio.run(_serve(int(sys.argv[-1]), body_mode))
        return
    with tempfile.TemporaryDirectory(prefix="mode-probe-") as tmp:
        work = Path(tmp)
        up_port, ext, port = envoys.free_port(), envoys.free_port(), envoys.free_port()
        upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
        sidecar = subprocess.Popen([sys.executable, __file__, body_mode, "--serve", str(ext)])
        cfg = envoys.bare_extproc_config(port, envoys.free_port(), up_port, ext)
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        proc = hcm["http_filters"][0]["typed_config"]
        proc["processing_mode"] = {
            "request_header_mode": "SEND",
            "request_body_mode": "STREAMED",
            "response_header_mode": "SKIP",
            "response_body_mode": "NONE" if body_mode == "override" else body_mode,
        }
        proc.update(send_body_without_waiting_for_header_response=True, allow_mode_override=True)
        proc["mutation_rules"] = {"allow_all_routing": True}
        proc["request_attributes"] = ["request.path"]
        proc["response_attributes"] = [
            "response.code",
            "response.code_details",
            "upstream.request_attempt_count",
        ]
        envoy = envoys.start_envoy(cfg, work, "probe")
        try:
            time.sleep(1.5)
            resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=envoys.REQUEST,
                              headers={"content-type": "application/json"}, timeout=5)  # fmt: skip
            time.sleep(0.3)
            kind = "Messages" if resp.json().get("type") == "message" else "chat"
            print(
                f"client got {resp.status_code}, a {kind} body (the :path change applied: {kind == 'Messages'})"
            )
            print(
                f"  x-probe: {resp.headers.get('x-probe')!r}, content-length: {resp.headers.get('content-length')!r}"
            )
        finally:
            _end(envoy)
            sidecar.kill()
            _end(upstream)


if __name__ == "__main__":
    main()
