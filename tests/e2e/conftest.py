"""End-to-end fixtures: the real Envoy, both sidecars and mock providers on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from extproc.ports import free_port
from extproc.supervisor import Stack

ROOT = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-test-openai-provider-key-0001"
ANTHROPIC_KEY = "sk-ant-test-provider-key-0002"
GEMINI_KEY = "AIza-test-gemini-provider-key-0003"
BEDROCK_KEY = "bedrock-test-api-key-0004"
AZURE_KEY = "azure-test-provider-key-0005"
VERTEX_TOKEN = "ya29.vertex-test-access-token-0006"
CLIENT_KEY = "sk-client-key-never-forwarded"  # what clients send; must never reach a provider
PROVIDER_KEYS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, BEDROCK_KEY)


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


@dataclass
class Mock:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        """What the provider received; header names lowercased, as HTTP treats them."""
        seen = httpx.get(f"{self.url}/__mock/requests").json()
        for r in seen:
            r["headers"] = {k.lower(): v for k, v in r["headers"].items()}
        return seen

    def clear(self) -> None:
        httpx.delete(f"{self.url}/__mock/requests")


def start_mock(*args: str) -> Mock:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc", "mock", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/__mock/health")
    return Mock(port, proc)


# The mock provider's test controls (x-mock-status, x-mock-delay-ms, ...) are client headers, and what
# reaches a provider is an allowlist: test routes allow them explicitly.
MOCK_CONTROLS = {"forwardHeaders": ["x-mock-*"]}


def provider_route(
    name: str, prefix: str, provider: dict, host: str, key: str | None, **extra: object
) -> dict:
    """One provider behind ``prefix``; ``key=None`` leaves credentials to the provider's own chain."""
    route: dict = {
        "name": name,
        "matches": [{"path": {"pathPrefix": prefix}}],
        "backends": [{"ai": {"name": name, "provider": provider, "hostOverride": host}}],
    }
    policies: dict = {"backendAuth": {"key": key}} if key is not None else {}
    policies["ai"] = {**MOCK_CONTROLS, **extra.pop("ai", {})}  # type: ignore[dict-item]
    route["policies"] = {**policies, **extra}
    return route


def listener_config(routes: list[dict], **limits: object) -> dict:
    """A gateway config with ``routes`` on one listener; every port is a free one."""
    config: dict = {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()}
    if limits:
        config["limits"] = limits
    return {"config": config, "binds": [{"port": free_port(), "listeners": [{"routes": routes}]}]}


def failover_route(name: str, prefix: str, primary_host: str, secondary_host: str) -> dict:
    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": prefix}}],
        "policies": {"retry": {"attempts": 2, "codes": [429, 500, 502, 503, 504]}, "ai": MOCK_CONTROLS},
        "backends": [
            {
                "ai": {
                    "groups": [
                        {
                            "providers": [
                                {
                                    "name": "primary",
                                    "provider": {"anthropic": {"model": "claude-3-5-haiku-latest"}},
                                    "hostOverride": primary_host,
                                    "backendAuth": {"key": ANTHROPIC_KEY},
                                }
                            ]
                        },
                        {
                            "providers": [
                                {
                                    "name": "secondary",
                                    "provider": {"openAI": {"model": "gpt-4o"}},
                                    "hostOverride": secondary_host,
                                    "backendAuth": {"key": OPENAI_KEY},
                                }
                            ]
                        },
                    ]
                }
            }
        ],
    }


@dataclass
class Gateway:
    url: str
    stack: Stack
    mock: Mock
    config: dict
    config_path: Path
    readiness_url: str


def access_log_entries(workdir: Path) -> list[dict]:
    """Envoy's access log so far: one JSON object per line, among Envoy's other output."""
    lines = (workdir / "envoy.log").read_text(errors="replace").splitlines()
    return [json.loads(ln) for ln in lines if ln.startswith("{")]


def access_log_entry(gw: Gateway, match: Callable[[dict], bool], timeout: float = 20) -> dict:
    """The first access-log entry ``match`` accepts; waits, as Envoy flushes the log every 10 s."""
    deadline = time.monotonic() + timeout
    while True:
        found = next((e for e in access_log_entries(gw.stack.workdir) if match(e)), None)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no access log entry matched within {timeout}s")
        time.sleep(0.2)


def gateway_config(mock: Mock, m429: Mock, m503: Mock, closed_port: int, **globals_: object) -> dict:
    host = f"127.0.0.1:{mock.port}"
    routes = [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, ANTHROPIC_KEY),
        provider_route("gemini", "/gemini", {"gemini": {}}, host, GEMINI_KEY),
        provider_route("bedrock", "/bedrock", {"bedrock": {"region": "us-east-1"}}, host, BEDROCK_KEY),
        provider_route("slow", "/slow", {"openAI": {}}, host, OPENAI_KEY, timeout={"requestTimeout": "1s"}),
        provider_route(
            "slow-anthropic",
            "/slow-anthropic",
            {"anthropic": {}},
            host,
            ANTHROPIC_KEY,
            timeout={"requestTimeout": "1s"},
        ),
        provider_route(
            "cors",
            "/cors",
            {"openAI": {}},
            host,
            OPENAI_KEY,
            cors={
                "allowOrigins": ["https://app.example.com"],
                "allowHeaders": ["content-type", "authorization"],
                "allowMethods": ["POST", "GET"],
                "maxAge": "10m",
            },
        ),
        failover_route("failover-429", "/failover/429", f"127.0.0.1:{m429.port}", host),
        failover_route("failover-503", "/failover/503", f"127.0.0.1:{m503.port}", host),
        failover_route("failover-refused", "/failover/refused", f"127.0.0.1:{closed_port}", host),
        provider_route("default", "/v1", {"openAI": {}}, host, OPENAI_KEY),
    ]
    return listener_config(routes, maxRequestBytes=256 * 1024, sidecarTimeout="2s", **globals_)


@pytest.fixture(scope="session")
def mocks() -> Iterator[tuple[Mock, Mock, Mock]]:
    started = [start_mock(), start_mock("--force-status", "429"), start_mock("--force-status", "503")]
    yield started[0], started[1], started[2]
    for m in started:
        m.proc.terminate()
        m.proc.wait(timeout=5)


def http_connection_managers(bootstrap: dict) -> list[dict]:
    """The gateway listeners' HttpConnectionManager configs in a rendered bootstrap."""
    return [
        listener["filter_chains"][0]["filters"][0]["typed_config"]
        for listener in bootstrap["static_resources"]["listeners"]
        if listener["name"].startswith("bind_")
    ]


@dataclass
class PatchedStack(Stack):
    """A stack whose rendered bootstrap is changed before Envoy starts: for tests that model a
    deployment configuring Envoy differently (``envoy_patch`` edits the bootstrap dict in place)."""

    envoy_patch: Callable[[dict], None] | None = None

    def render(self) -> Path:
        path = super().render()
        if self.envoy_patch is not None:
            bootstrap = yaml.safe_load(path.read_text())
            self.envoy_patch(bootstrap)
            path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        return path


def launch(tmp: Path, config: dict, mock: Mock, envoy_patch: Callable[[dict], None] | None = None) -> Gateway:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = PatchedStack(
        envoy_patch=envoy_patch,
        config_path=str(path),
        workdir=tmp,
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=None,
        quiet=True,
        envoy_log_level=os.environ.get("GW_ENVOY_LOG", "warning"),
    )
    stack.start(timeout=30)
    port = config["binds"][0]["port"]
    return Gateway(
        url=f"http://127.0.0.1:{port}",
        stack=stack,
        mock=mock,
        config=config,
        config_path=path,
        readiness_url=f"http://127.0.0.1:{config['config']['readinessPort']}/ready",
    )


@contextmanager
def running(mocks: list[Mock], start: Callable[[], Gateway]) -> Iterator[Gateway]:
    """The gateway ``start`` launches; it and ``mocks`` are stopped after, or if it fails to start."""

    def stop_mocks() -> None:
        for m in mocks:
            m.proc.terminate()
            m.proc.wait(timeout=5)

    try:
        gw = start()
    except BaseException:
        stop_mocks()
        raise
    try:
        yield gw
    finally:
        gw.stack.stop()
        stop_mocks()


@contextmanager
def gateway_with_own_mock(tmp: Path, routes: Callable[[str], list[dict]]) -> Iterator[Gateway]:
    """A gateway with a mock of its own; ``routes`` gets the mock's ``host:port``."""
    mock = start_mock()
    host = f"127.0.0.1:{mock.port}"
    config = listener_config(routes(host), maxRequestBytes=1024 * 1024, sidecarTimeout="2s")
    with running([mock], lambda: launch(tmp, config, mock)) as gw:
        yield gw


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, mocks: tuple[Mock, Mock, Mock]) -> Iterator[Gateway]:
    mock, m429, m503 = mocks
    config = gateway_config(mock, m429, m503, free_port())
    gw = launch(tmp_path_factory.mktemp("gateway"), config, mock)
    yield gw
    gw.stack.stop()


@pytest.fixture
def private_gateway(tmp_path: Path, mocks: tuple[Mock, Mock, Mock]) -> Iterator[Gateway]:
    """A gateway of its own, for tests that stop parts of it."""
    mock, m429, m503 = mocks
    gw = launch(tmp_path, gateway_config(mock, m429, m503, free_port()), mock)
    yield gw
    gw.stack.stop()


# --- a mock provider behind TLS, with a self-signed certificate ----------------------------------------


def self_signed_cert(tmp: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate no trust store knows, for ``host`` and 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "mock-cert.pem", tmp / "mock-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


_TLS_MOCK = """
import ssl, sys
from aiohttp import web
from extproc.mock.server import create_app
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[3]), ssl_context=ctx, print=None, access_log=None)
"""


@dataclass
class TLSMock(Mock):
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        seen = httpx.get(f"{self.url}/__mock/requests", verify=False).json()
        for r in seen:
            r["headers"] = {k.lower(): v for k, v in r["headers"].items()}
        return seen

    def clear(self) -> None:
        httpx.delete(f"{self.url}/__mock/requests", verify=False)


def start_tls_mock(tmp: Path) -> TLSMock:
    cert, key = self_signed_cert(tmp)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _TLS_MOCK, str(cert), str(key), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mock = TLSMock(port, proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{mock.url}/__mock/health", verify=False, timeout=1).status_code == 200:
                return mock
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise TimeoutError(mock.url)


def restart_extproc(gw: Gateway, config: dict, tmp: Path) -> None:
    """The ext_proc sidecar reloaded with ``config`` while Envoy keeps the bootstrap it started with."""
    path = tmp / "reloaded.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    gw.stack.stop_one("extproc")
    log = open(gw.stack.workdir / "extproc.log", "ab")  # noqa: SIM115 - the child owns it
    gw.stack.procs["extproc"] = subprocess.Popen(
        [sys.executable, "-m", "extproc", "extproc", "--config", str(path),
         "--listen", f"127.0.0.1:{gw.stack.extproc_port}",
         "--metrics-listen", f"127.0.0.1:{gw.stack.metrics_port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    # Envoy health-checks the sidecar every 2s: ready again once it has seen the new process.
    gw.stack.wait_ready(30)
