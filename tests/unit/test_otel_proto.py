"""opentelemetry-proto's modules must be its own: xds-protos ships an older copy of the same files
(opentelemetry/proto/...), and whichever installs last wins. The OTLP exporters need the newer
messages; `make venv` (and the Dockerfile) reinstall opentelemetry-proto after everything else."""

from __future__ import annotations

import importlib.metadata


def test_the_otlp_messages_the_exporters_need_are_there() -> None:
    from opentelemetry.proto.common.v1 import common_pb2

    version = importlib.metadata.version("opentelemetry-proto")
    assert hasattr(common_pb2, "InstrumentationScope"), (
        f"opentelemetry/proto was overwritten by xds-protos' older copy: run "
        f"pip install --force-reinstall --no-deps opentelemetry-proto=={version} (make venv does)"
    )
