"""ext_proc ProcessingRequest messages as Envoy sends them, for the in-process profilers
(bench/obs_profile.py, bench/hot_profile.py)."""

from __future__ import annotations

from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb


def headers_message(kind: str, values: dict[str, str], attrs: dict[str, Any]) -> pb.ProcessingRequest:
    """A ``request_headers`` or ``response_headers`` message with ext_proc's attributes."""
    msg = pb.ProcessingRequest()
    part = getattr(msg, kind)
    for k, v in values.items():
        part.headers.headers.add(key=k, raw_value=v.encode())
    msg.attributes["envoy.filters.http.ext_proc"].update(attrs)
    return msg


def body_message(kind: str, data: bytes) -> pb.ProcessingRequest:
    """A whole ``request_body`` or ``response_body`` (end of stream)."""
    msg = pb.ProcessingRequest()
    getattr(msg, kind).body = data
    getattr(msg, kind).end_of_stream = True
    return msg
