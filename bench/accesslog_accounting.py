"""A design experiment for issue 9: what the usage record would cost if Envoy's gRPC access log
carried the answer's usage, instead of the answer's two ext_proc messages.

Not the gateway as it ships: ``accesslog`` is the ``off`` gateway of bench/observability.py (the
usage-record stage taken out, so Envoy never sends the answer to the sidecar) with two changes to
its rendered Envoy config, and a benchmark-only wrapper (``_FROM_ACCESS_LOG``) for its sidecar:

- Envoy's ``json_to_metadata`` filter reads the answer's ``usage.prompt_tokens``,
  ``usage.completion_tokens``, ``model`` and ``id`` into dynamic metadata;
- the gRPC access log that sends refused requests to the sidecar (telemetry/rejected.py) sends
  every request;
- the sidecar's handler builds an Exchange from each entry and runs the real UsageRecord stage on
  it: cost, ledger row, JSON log line and metrics, the same work ``default`` does.

Measured against ``off``, ``usage`` and ``default`` from bench/observability.py, in alternating
windows on one upstream (wrk, 16 connections), with the CPU each gateway's processes spent per
request. What the experiment leaves out: spans, the request facts a real design would carry to
the log entry (request model, identity, attempts), and whether the entry reaches the worker that
served the request (README "What it costs" lists what a real design must settle).

    .venv/bin/python bench/accesslog_accounting.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure, observability  # noqa: E402
from extproc.supervisor import Stack  # noqa: E402

PATHS = ("off", "usage", "default", "accesslog")
USAGE_NS = "gw.bench_usage"

# The usage-record stage out of every route (as ``off``), and the refused-request handler of the
# access log replaced by one that records every entry through the real UsageRecord stage.
_FROM_ACCESS_LOG = f"""
import sys
from extproc import cli
from extproc.pipeline import stages
from extproc.pipeline.exchange import Exchange, new_request_id
from extproc.pipeline.stages.usage_record import UsageRecord
from extproc.telemetry import rejected
from extproc.translate.usage import Usage

_for_route = stages.for_route
stages.for_route = lambda *a, **k: [s for s in _for_route(*a, **k) if not isinstance(s, UsageRecord)]
_record = UsageRecord()

def handle(gw, entry):
    props = entry.common_properties
    route = gw.routes_by_id.get(props.route_name.split("#", 1)[0])
    if route is None:
        return
    ex = Exchange(new_request_id(), route, "completions", "POST", entry.request.path)
    ex.upstream = route.direct_upstream
    ex.status = entry.response.response_code.value
    ex.outcome = "ok" if 0 < ex.status < 400 else "provider_error"
    found = props.metadata.filter_metadata.get("{USAGE_NS}")
    if found is not None:
        f = found.fields
        ex.usage = Usage(input_tokens=int(f["in"].number_value), output_tokens=int(f["out"].number_value))
        ex.response_model = f["model"].string_value
    ex.started_wall = props.start_time.seconds + props.start_time.nanos / 1e9
    ex.started = 0.0
    took = props.time_to_last_downstream_tx_byte
    ex.ended = took.seconds + took.nanos / 1e9
    done = _record.on_complete(ex)  # a coroutine that never awaits: run to its end here
    try:
        done.send(None)
    except StopIteration:
        pass

rejected.handle = handle
sys.argv = ["extproc", *sys.argv[1:]]
cli.main()
"""


def _rule(path: list[str], key: str, kind: str) -> dict[str, Any]:
    return {
        "selectors": [{"key": k} for k in path],
        "on_present": {"metadata_namespace": USAGE_NS, "key": key, "type": kind},
    }


JSON_TO_METADATA = {
    "name": "envoy.filters.http.json_to_metadata",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
        "response_rules": {
            "rules": [
                _rule(["usage", "prompt_tokens"], "in", "NUMBER"),
                _rule(["usage", "completion_tokens"], "out", "NUMBER"),
                _rule(["model"], "model", "STRING"),
                _rule(["id"], "id", "STRING"),
            ]
        },
    },
}


class AccessLogStack(observability.WrappedStack):
    wrapper = _FROM_ACCESS_LOG

    def render(self) -> Path:
        path = super().render()
        config = yaml.safe_load(path.read_text())
        for hcm in envoys.http_managers(config):
            for logger in hcm.get("access_log", []):
                if logger["name"] == "envoy.access_loggers.http_grpc":
                    logger.pop("filter", None)  # every request, not only refused ones
            names = [f["name"] for f in hcm["http_filters"]]
            hcm["http_filters"].insert(names.index("envoy.filters.http.router"), JSON_TO_METADATA)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def gateway(name: str, up: str, sink: observability.Sink, work: Path) -> tuple[Stack, str]:
    if name != "accesslog":
        return observability.gateway(name, up, sink, work)
    port = envoys.free_port()
    config = envoys.gateway_config(port, [envoys.provider_route("openai", {"openAI": {}}, up)])
    (work / name).mkdir(parents=True)
    path = work / name / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    stack = AccessLogStack(
        str(path), work / name / "gateway", extproc_port=envoys.free_port(), authz_port=envoys.free_port(),
        mock_port=None, quiet=True, envoy_concurrency=1,
    )  # fmt: skip
    stack.start(timeout=30)
    return stack, f"http://127.0.0.1:{port}/openai/v1/chat/completions"


def _records(work: Path, name: str) -> list[dict[str, Any]]:
    lines = (work / name / "gateway" / "extproc.log").read_text().splitlines()
    return [json.loads(line) for line in lines if '"type":"llm_request"' in line]


def measure_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """bench/observability.py's alternating windows on these four gateways, then a look at the
    experiment's records: the real ones, tokens and status read from the log entry."""
    figures = observability.measure_all(args, work, PATHS, gateway)
    answered = [r for r in _records(work, "accesslog") if r["http_status_code"] == 200]
    check = {"records": len(answered), "with_tokens": sum(r["input_tokens"] is not None for r in answered)}
    return {"summary": figures["summary"], "accesslog_records": check}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5, help="seconds per window")
    p.add_argument("--rounds", type=int, default=3, help="windows per gateway, alternating")
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    measure.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-accesslog-") as tmp:
        print(json.dumps(measure_all(args, Path(tmp)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
