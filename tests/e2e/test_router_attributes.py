"""The attributes the router-level ext_proc asks for carry values in the real Envoy.

Envoy ignores an attribute name it does not know (no config error, just no value), so the names
in extproc/render/filters.py are checked here: the rendered bootstrap runs against a recording
ext_proc that asks for the response headers, on a failover route whose primary refuses connections.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import json_format

from extproc import gateway
from extproc.config.loader import parse_text
from extproc.render import SidecarAddresses, dump, render
from extproc.supervisor import envoy_binary
from tests.e2e.conftest import failover_route, free_port, listener_config, start_mock

_CONTINUE = ("request_headers", "request_body", "response_headers", "response_body")


class Recorder(pb_grpc.ExternalProcessorServicer):
    """Continues everything; at router level asks for the response headers and records attributes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def Process(self, request_iterator, context):  # type: ignore[no-untyped-def]
        phase = dict(context.invocation_metadata()).get("x-gw-phase", "")
        for msg in request_iterator:
            kind = msg.WhichOneof("request")
            attrs = msg.attributes.get("envoy.filters.http.ext_proc")
            self.seen.append((phase, kind, json_format.MessageToDict(attrs) if attrs is not None else {}))
            resp = pb.ProcessingResponse()
            if kind in _CONTINUE:
                getattr(resp, kind).response.SetInParent()
            if kind == "request_headers" and phase == "router":
                resp.mode_override.response_header_mode = resp.mode_override.SEND
            yield resp


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[str, Recorder]]:
    mock = start_mock()
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_ExternalProcessorServicer_to_server(recorder, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    config = listener_config(
        [failover_route("attrs", "/attrs", f"127.0.0.1:{free_port()}", f"127.0.0.1:{mock.port}")]
    )
    gw = gateway.build(parse_text(yaml.safe_dump(config)).config)
    bootstrap = tmp_path / "envoy.yaml"
    addrs = SidecarAddresses(
        extproc=f"127.0.0.1:{port}", authz=f"127.0.0.1:{free_port()}", listen_host="127.0.0.1"
    )
    bootstrap.write_text(dump(render(gw, addrs)))
    log = open(tmp_path / "envoy.log", "wb")  # noqa: SIM115 - closed below
    envoy = subprocess.Popen(
        [envoy_binary(), "-c", str(bootstrap), "--use-dynamic-base-id", "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{config['binds'][0]['port']}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/nothing-here", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, recorder
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        log.close()
        server.stop(0)
        mock.proc.terminate()
        mock.proc.wait(timeout=5)


def test_router_phase_gets_the_response_attributes(recorded: tuple[str, Recorder]) -> None:
    url, recorder = recorded
    recorder.seen.clear()
    resp = httpx.post(
        url + "/attrs/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert resp.status_code != 503, resp.text  # Envoy reached the mock through the secondary
    router = [(kind, attrs) for phase, kind, attrs in recorder.seen if phase == "router"]
    request_attrs = next(a for k, a in router if k == "request_headers")
    assert request_attrs["xds.route_name"] == "attrs"
    response_attrs = next(a for k, a in router if k == "response_headers")
    assert response_attrs["response.code_details"] == "via_upstream"
    assert "attrs/secondary" in str(
        response_attrs["xds.upstream_host_metadata"]
    )  # the endpoint that answered
    assert float(response_attrs["upstream.request_attempt_count"]) == 2  # refused, then failed over
