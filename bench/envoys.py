"""The processes the benchmarks measure: Envoy configs, the gateway stack, ports.

Every path goes to the same fast upstream: a second Envoy answering with fixed
provider bodies (``direct_response``), so the upstream is never the bottleneck
and costs the same for every path.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from extproc.ports import free_port
from extproc.render import common
from extproc.supervisor import Stack, envoy_binary

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

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


EXTPROC_CLUSTER: str = common.EXTPROC_CLUSTER
AUTHZ_CLUSTER: str = common.AUTHZ_CLUSTER


def _admin(port: int) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def _listener(name: str, port: int, routes: list[dict]) -> dict:
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": _HCM,
        "stat_prefix": name,
        "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": [router],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _static_cluster(name: str, port: int, http2: bool = False) -> dict:
    cluster: dict = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def upstream_config(port: int, admin: int) -> dict:
    def direct(path: str, body: str) -> dict:
        return {
            "match": {"path": path},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }

    routes = [direct("/v1/chat/completions", OPENAI_BODY), direct("/v1/messages", ANTHROPIC_BODY)]
    return {"admin": _admin(admin), "static_resources": {"listeners": [_listener("upstream", port, routes)]}}


def plain_proxy_config(port: int, admin: int, upstream: int) -> dict:
    """Envoy alone: a plain route to the upstream, the baseline every path is compared to."""
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
    return {
        "admin": _admin(admin),
        "static_resources": {
            "listeners": [_listener("proxy", port, routes)],
            "clusters": [_static_cluster("upstream", upstream)],
        },
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
    cfg["static_resources"]["clusters"].append(_static_cluster("bare_extproc", extproc, http2=True))
    return cfg


def provider_route(name: str, provider: dict, host: str) -> dict:
    """A gateway route under ``/<name>`` to one provider at ``host``."""
    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": f"/{name}"}}],
        "backends": [{"ai": {"name": name, "provider": provider, "hostOverride": host}}],
        "policies": {"backendAuth": {"key": "bench-key"}},
    }


def failover_route(name: str, host: str) -> dict:
    """Anthropic first, OpenAI second: a route that can fail over across formats (two ext_proc levels)."""

    def group(provider_name: str, provider: dict) -> dict:
        return {
            "providers": [
                {
                    "name": provider_name,
                    "provider": provider,
                    "hostOverride": host,
                    "backendAuth": {"key": "bench-key"},
                }
            ]
        }

    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": f"/{name}"}}],
        "backends": [
            {"ai": {"groups": [group("primary", {"anthropic": {}}), group("secondary", {"openAI": {}})]}}
        ],
    }


def gateway_config(port: int, routes: list[dict]) -> dict:
    return {
        "config": {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()},
        "binds": [{"port": port, "listeners": [{"routes": routes}]}],
    }


def http_managers(config: dict) -> list[dict]:
    """The HttpConnectionManager configs of a rendered bootstrap, for benches that patch them."""
    return [
        net["typed_config"]
        for listener in config["static_resources"]["listeners"]
        for chain in listener.get("filter_chains", [])
        for net in chain["filters"]
        if "http_filters" in net.get("typed_config", {})
    ]


def start_envoy(config: dict, workdir: Path, name: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
    argv = [envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--concurrency", str(concurrency)]
    return subprocess.Popen([*argv, "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT)


def gateway_stack(
    config: dict,
    work: Path,
    envoy_concurrency: int,
    workers: int = 1,
    stack_type: type[Stack] = Stack,
    extproc_cpus: list[int] | None = None,
) -> Stack:
    """The gateway (Envoy and both sidecars, no mock) for ``config``, not started yet;
    ``extproc_cpus``: its workers kept on those CPUs (``gateway run --extproc-cpus``)."""
    cfg = work / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return stack_type(
        str(cfg),
        work / "gateway",
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=None,
        quiet=True,
        extproc_workers=workers,
        extproc_cpus=extproc_cpus,
        envoy_concurrency=envoy_concurrency,
    )


def added_p50(
    config: dict, work: Path, duration: int, base: str, measured: str, script: Path, rounds: int = 5
) -> dict:
    """One gateway for ``config``, wrk at concurrency 1 and 16 on two of its routes (``/{name}``),
    and what ``measured`` adds to ``base``'s p50: the same Envoy, sidecars and upstream for both.

    The two routes' windows alternate (base, measured, base, measured ...) for ``rounds`` rounds and
    the added p50 is the median of each round's difference: a change in the machine's load falls on
    both routes of a round alike, where one window each came out 0.6 ms apart either way."""
    import statistics

    from bench import measure  # measure imports nothing of ours; kept local to keep this module light

    work.mkdir(parents=True, exist_ok=True)
    stack = gateway_stack(config, work, 1)
    stack.start(timeout=30)
    port = config["binds"][0]["port"]
    urls = {name: f"http://127.0.0.1:{port}/{name}/v1/chat/completions" for name in (base, measured)}
    windows: dict[str, dict[str, list[dict]]] = {n: {"c1": [], "c16": []} for n in urls}
    try:
        for url in urls.values():
            measure.wrk(url, 4, 1, script)  # warm-up
        for _ in range(rounds):
            for c in (1, 16):
                for name, url in urls.items():
                    windows[name][f"c{c}"].append(measure.wrk(url, c, duration, script))
    finally:
        stack.stop()
    out: dict = {}
    for name, levels in windows.items():
        out[name] = {
            level: {"p50_ms": statistics.median(w["p50_ms"] for w in runs), "windows": runs}
            for level, runs in levels.items()
        }
    for c in ("c1", "c16"):
        diffs = [
            m["p50_ms"] - b["p50_ms"] for b, m in zip(windows[base][c], windows[measured][c], strict=True)
        ]
        out[f"added_p50_ms_{c}"] = round(statistics.median(diffs), 3)
        out[f"added_p50_ms_{c}_rounds"] = [round(d, 3) for d in diffs]
    return out
