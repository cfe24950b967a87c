"""Gateway overhead against Envoy alone, on the same machine, in one run.

Paths to the same fast mock upstream (a second Envoy answering with fixed
provider bodies, so the upstream is never the bottleneck):

- ``envoy``:   Envoy alone, a plain route to the upstream (the baseline);
- ``bare``:    Envoy plus a do-nothing Python ext_proc seeing all four phases
  (the floor any Python sidecar pays: four gRPC round trips on one stream);
- ``openai``:  the gateway, OpenAI passthrough (authz, then the router phase
  validates, sets path and key);
- ``anthropic``: the gateway translating OpenAI <-> Anthropic Messages.

Each is measured with wrk at concurrency 1 (added latency) and at a higher
concurrency (throughput). Prints requests/s, p50 and p99, and the ratios.

    make bench            # or: .venv/bin/python bench/run.py --duration 10
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extproc.supervisor import Stack, envoy_binary  # noqa: E402

OPENAI_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)
ANTHROPIC_BODY = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-latest",
        "content": [{"type": "text", "text": "Hello from the bench upstream."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
)
REQUEST = json.dumps(
    {
        "model": "gpt-4o",
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence, please."},
        ],
    }
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listener(name: str, port: int, routes: list[dict]) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def upstream_config(port: int, admin: int) -> dict:
    def direct(path: str, body: str) -> dict:
        return {
            "match": {"path": path},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }

    routes = [direct("/v1/chat/completions", OPENAI_BODY), direct("/v1/messages", ANTHROPIC_BODY)]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [_listener("upstream", port, routes)]},
    }


def plain_proxy_config(port: int, admin: int, upstream: int) -> dict:
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
    cluster = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": upstream}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [_listener("proxy", port, routes)], "clusters": [cluster]},
    }


def bare_extproc_config(port: int, admin: int, upstream: int, extproc: int) -> dict:
    """Envoy alone plus a do-nothing Python ext_proc seeing all four phases."""
    cfg = plain_proxy_config(port, admin, upstream)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.ext_proc",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {"envoy_grpc": {"cluster_name": "bare_extproc"}, "timeout": "2s"},
                "processing_mode": {
                    "request_header_mode": "SEND",
                    "request_body_mode": "BUFFERED",
                    "response_header_mode": "SEND",
                    "response_body_mode": "BUFFERED",
                },
            },
        },
    )
    sidecar = {
        "name": "bare_extproc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "bare_extproc",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": extproc}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    cfg["static_resources"]["clusters"].append(sidecar)
    return cfg


def gateway_config(port: int, upstream: int) -> dict:
    def route(name: str, provider: dict) -> dict:
        return {
            "name": name,
            "matches": [{"path": {"pathPrefix": f"/{name}"}}],
            "backends": [
                {"ai": {"name": name, "provider": provider, "hostOverride": f"127.0.0.1:{upstream}"}}
            ],
            "policies": {"backendAuth": {"key": "bench-key"}},
        }

    return {
        "config": {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()},
        "binds": [
            {
                "port": port,
                "listeners": [
                    {"routes": [route("openai", {"openAI": {}}), route("anthropic", {"anthropic": {}})]}
                ],
            }
        ],
    }


def start_envoy(config: dict, workdir: Path, name: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [
            envoy_binary(),
            "-c",
            str(path),
            "--use-dynamic-base-id",
            "--concurrency",
            str(concurrency),
            "--log-level",
            "error",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ok(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if (
                httpx.post(
                    url, content=REQUEST, headers={"content-type": "application/json"}, timeout=2
                ).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(url: str, connections: int, duration: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
        f"wrk.body = {json.dumps(REQUEST)}\n"
    )
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {p: float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u] for p, v, u in _LAT.findall(out)}
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (Debian package)...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)


def gateway_stack(config: dict, work: Path, envoy_concurrency: int, workers: int = 1) -> Stack:
    """The gateway (Envoy and both sidecars, no mock) for ``config``, not started yet."""
    cfg = work / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return Stack(
        str(cfg),
        work / "gateway",
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=None,
        quiet=True,
        extproc_workers=workers,
        envoy_concurrency=envoy_concurrency,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrency for the throughput runs")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--workers", type=int, default=1, help="extproc worker processes")
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=1,
        help="worker threads of every Envoy (the same for all paths)",
    )
    args = parser.parse_args()
    ensure_wrk()

    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    up_port, proxy_port, gw_port = free_port(), free_port(), free_port()
    bare_port, bare_extproc = free_port(), free_port()
    procs = [
        start_envoy(upstream_config(up_port, free_port()), work, "upstream"),
        start_envoy(
            plain_proxy_config(proxy_port, free_port(), up_port), work, "envoy-alone", args.envoy_concurrency
        ),
        subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_extproc.py"), str(bare_extproc)]),
        start_envoy(
            bare_extproc_config(bare_port, free_port(), up_port, bare_extproc),
            work,
            "bare-extproc",
            args.envoy_concurrency,
        ),
    ]
    stack = gateway_stack(gateway_config(gw_port, up_port), work, args.envoy_concurrency, args.workers)
    try:
        stack.start(timeout=30)
        targets = {
            "envoy": f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
            "bare": f"http://127.0.0.1:{bare_port}/v1/chat/completions",
            "openai": f"http://127.0.0.1:{gw_port}/openai/v1/chat/completions",
            "anthropic": f"http://127.0.0.1:{gw_port}/anthropic/v1/chat/completions",
        }
        for url in targets.values():
            wait_ok(url)
            wrk(url, 4, 1, work)  # warm up connections and caches
        results: dict[str, dict[str, dict[str, float]]] = {}
        for name, url in targets.items():
            results[name] = {
                "c1": wrk(url, 1, args.duration, work),
                f"c{args.connections}": wrk(url, args.connections, args.duration, work),
            }
        report(results, args.connections)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        stack.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=5)


def report(results: dict[str, dict[str, dict[str, float]]], conns: int) -> None:
    base = results["envoy"]
    hi = f"c{conns}"
    print(
        f"{'path':<11}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs envoy rps':>14}{'added p50 ms':>14}"
    )
    for name, runs in results.items():
        for level in ("c1", hi):
            r = runs[level]
            ratio = r["rps"] / base[level]["rps"]
            added = r["p50_ms"] - base[level]["p50_ms"]
            errs = f"  ({int(r['errors'])} non-2xx)" if r["errors"] else ""
            print(
                f"{name:<11}{level[1:]:>5}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{ratio:>13.0%}{added:>14.2f}{errs}"
            )


if __name__ == "__main__":
    main()
