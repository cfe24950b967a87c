"""Can the router phase know, at request headers, whether the answer will stream? Probed (issue 9).

The answer's processing mode can be changed only in the answer to the request headers message
(bench/mode_probe.py), and until now whether the answer streams was known only from the request
body, one message later: so every answer, whole or streamed, cost the two response messages.
Envoy's ``json_to_metadata`` filter, placed before the router-phase ext_proc filter, reads the
body's ``stream`` into dynamic metadata before ext_proc sees the request headers (it holds the
headers until it has the whole body, as the buffer filter before it does already), and ext_proc
forwards that namespace with its request headers message. The probe's sidecar prints what its
request headers messages carried for four requests: no ``stream``, ``true``, ``false``, and the
key twice (``false`` then ``true``: Envoy's parser keeps the last, as orjson does).

Envoy 1.40 showed: the flag arrives with the request headers message for each of them (missing:
the rule's ``on_missing`` value); duplicate keys give the last one.

    .venv/bin/python bench/stream_flag_probe.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, observability  # noqa: E402

NAMESPACE = "gw.probe_request"
EXT_PROC = "envoy.filters.http.ext_proc"

# The sidecar as it ships, printing the probe's namespace of each request headers message.
_PRINTING = f"""
import sys
from extproc import cli, server
_identity = server._identity
def _printing(msg):
    ns = msg.metadata_context.filter_metadata.get("{NAMESPACE}")
    seen = None if ns is None else {{k: v.WhichOneof("kind") + "=" + str(v.bool_value) for k, v in ns.fields.items()}}
    print("PROBE request headers metadata:", seen, flush=True)
    return _identity(msg)
server._identity = _printing
sys.argv = ["extproc", *sys.argv[1:]]
cli.main()
"""

STREAM_FLAG = {
    "name": "envoy.filters.http.json_to_metadata",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
        "request_rules": {
            "rules": [
                {
                    "selectors": [{"key": "stream"}],
                    "on_present": {"metadata_namespace": NAMESPACE, "key": "stream"},
                    "on_missing": {"metadata_namespace": NAMESPACE, "key": "stream", "value": False},
                }
            ]
        },
    },
}


class ProbeStack(observability.WrappedStack):
    wrapper = _PRINTING

    def render(self) -> Path:
        path = super().render()
        config = yaml.safe_load(path.read_text())
        for hcm in envoys.http_managers(config):
            filters = hcm["http_filters"]
            names = [f["name"] for f in filters]
            if EXT_PROC not in names:
                continue
            at = names.index(EXT_PROC)
            options: Any = filters[at]["typed_config"]["metadata_options"]
            options["forwarding_namespaces"]["untyped"].append(NAMESPACE)
            filters.insert(at, STREAM_FLAG)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def main() -> int:
    body = json.loads(envoys.REQUEST)
    requests = [
        ("no stream key", json.dumps(body)),
        ("stream: true", json.dumps({**body, "stream": True})),
        ("stream: false", json.dumps({**body, "stream": False})),
        ("stream twice, false then true", json.dumps(body)[:-1] + ', "stream": false, "stream": true}'),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-stream-flag-") as tmp:
        work = Path(tmp)
        up_port = envoys.free_port()
        upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
        port = envoys.free_port()
        config = envoys.gateway_config(port, [envoys.provider_route("openai", {"openAI": {}}, f"127.0.0.1:{up_port}")])
        (work / "gateway.yaml").write_text(yaml.safe_dump(config))
        stack = ProbeStack(
            str(work / "gateway.yaml"), work / "gateway", extproc_port=envoys.free_port(),
            authz_port=envoys.free_port(), mock_port=None, quiet=True, envoy_concurrency=1,
        )  # fmt: skip
        stack.start(timeout=30)
        try:
            url = f"http://127.0.0.1:{port}/openai/v1/chat/completions"
            for label, text in requests:
                got = httpx.post(url, content=text, headers={"content-type": "application/json"}, timeout=10)
                print(f"{label}: HTTP {got.status_code}")
            time.sleep(0.5)
            log = (work / "gateway" / "extproc.log").read_text().splitlines()
            print("\n".join(line for line in log if line.startswith("PROBE")))
        finally:
            stack.stop()
            upstream.terminate()
            upstream.wait(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
