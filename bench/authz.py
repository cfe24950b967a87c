"""The cost of auth: one authz decision (RS256 JWT + OPA, warm caches), and the gateway's
requests/s with auth on against an open route, in one run on the same upstream.

1. ``decision``: the authz sidecar's Check called in process, N times with the same signed
   token and body (p50/p99 per check, microseconds), then over gRPC from a client in this
   process (the round trip Envoy pays, minus Envoy).
2. ``gateway``: the gateway with two routes to the same fast upstream (bench/envoys.py): an
   open one and one with ``jwtAuth`` + ``opa``; wrk at concurrency 1 and 16 on each.

    .venv/bin/python bench/authz.py --checks 5000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import envoys, measure  # noqa: E402

ISSUER = "https://idp.bench/realms/bench"
REGO = """package envoy.authz

import rego.v1

default allow := false

allow if {
    input.attributes.request.http.method == "POST"
    input.parsed_body.model == "gpt-4o"
}
"""


def signing_material() -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="bench-1", use="sig", alg="RS256")
    return key, {"keys": [public]}


def token(key: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench-user", "aud": "gateway", "exp": now + 3600, "iat": now}
    claims["groups"] = ["engineering"]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench-1"})


def auth_policies(jwks: dict[str, Any], rego: Path) -> dict[str, Any]:
    return {
        "jwtAuth": {"issuer": ISSUER, "audiences": ["gateway"], "jwks": jwks},
        "opa": {"file": str(rego)},
    }


def routes(host: str, jwks: dict[str, Any], rego: Path) -> list[dict[str, Any]]:
    open_route = envoys.provider_route("open", {"openAI": {}}, host)
    authed = envoys.provider_route("authed", {"openAI": {}}, host)
    authed["policies"].update(auth_policies(jwks, rego))
    return [open_route, authed]


# --- 1. the decision -----------------------------------------------------------------------------


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns)
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
    }


async def _decisions(config_path: Path, bearer: str, checks: int) -> dict[str, Any]:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2 as pb
    from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

    from extproc import gateway
    from extproc.authz.mechanism import AuthContext
    from extproc.authz.server import Authorization
    from extproc.config.loader import load

    gw = gateway.build(load(config_path).config)
    ctx = AuthContext(config_path.parent)
    servicer = Authorization(gw, ctx)
    await servicer.start()
    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path = "POST", "/authed/v1/chat/completions"
    http.headers["authorization"] = f"Bearer {bearer}"
    http.headers["content-type"] = "application/json"
    http.raw_body = envoys.REQUEST.encode()
    check.attributes.context_extensions["route"] = "authed"

    async def timed(call: Any) -> list[int]:
        for _ in range(min(200, checks)):  # warm caches
            await call()
        out = []
        for _ in range(checks):
            t0 = time.perf_counter_ns()
            resp = await call()
            out.append(time.perf_counter_ns() - t0)
        if resp.status.code != 0:
            raise RuntimeError(f"the benchmark's check was denied: {resp.denied_response.body}")
        return out

    in_process = await timed(lambda: servicer.Check(check, None))
    server = grpc.aio.server()
    pb_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            over_grpc = await timed(lambda: stub.Check(check))
    finally:
        await server.stop(None)
        await ctx.close()
    return {"checks": checks, "in_process": _percentiles(in_process), "grpc": _percentiles(over_grpc)}


# --- 2. the gateway ------------------------------------------------------------------------------


def _wrk_script(bearer: str, work: Path) -> Path:
    script = work / "authed.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
        f'wrk.headers["authorization"] = "Bearer {bearer}"\nwrk.body = {json.dumps(envoys.REQUEST)}\n'
    )
    return script


def _gateway(config: dict[str, Any], work: Path, bearer: str, duration: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    stack = envoys.gateway_stack(config, work, 1)
    stack.start(timeout=30)
    port = config["binds"][0]["port"]
    script = _wrk_script(bearer, work)
    out: dict[str, Any] = {}
    try:
        for name in ("open", "authed"):
            url = f"http://127.0.0.1:{port}/{name}/v1/chat/completions"
            measure.wrk(url, 4, 1, script)
            out[name] = {f"c{c}": measure.wrk(url, c, duration, script) for c in (1, 16)}
    finally:
        stack.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=5000)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--skip-gateway", action="store_true")
    args = p.parse_args()
    key, jwks = signing_material()
    bearer = token(key)
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as tmp:
        work = Path(tmp)
        rego = work / "bench.rego"
        rego.write_text(REGO)
        upstream = None
        results: dict[str, Any] = {}
        try:
            up_port = envoys.free_port()
            upstream = envoys.start_envoy(envoys.upstream_config(up_port, envoys.free_port()), work, "upstream")
            config = envoys.gateway_config(envoys.free_port(), routes(f"127.0.0.1:{up_port}", jwks, rego))
            config_path = work / "gateway.yaml"
            config_path.write_text(yaml.safe_dump(config))
            results["decision"] = asyncio.run(_decisions(config_path, bearer, args.checks))
            if not args.skip_gateway:
                measure.ensure_wrk()
                results["gateway"] = _gateway(config, work / "gw", bearer, args.duration)
        finally:
            if upstream is not None:
                upstream.terminate()
                upstream.wait(timeout=5)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
