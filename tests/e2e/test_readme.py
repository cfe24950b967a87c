"""The README's examples, run as written against the default config (policies/gateway.yaml).

Only the addresses change: the gateway and the mock get free ports, so the test can
run beside a `make run`. Every shell block that calls the gateway runs in bash with
curl failing on HTTP errors; every Python block runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import Gateway, Mock, free_port, launch

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEFAULT_CONFIG = (ROOT / "policies" / "gateway.yaml").read_text()
_BLOCK = re.compile(r"```(sh|python)\n(.*?)```", re.S)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in _BLOCK.findall(README) if kind == lang and "localhost:3000" in body]


@pytest.fixture(scope="module")
def default_gateway(
    tmp_path_factory: pytest.TempPathFactory, mocks: tuple[Mock, Mock, Mock]
) -> Iterator[Gateway]:
    mock = mocks[0]
    text = DEFAULT_CONFIG.replace("${MOCK_HOST:-127.0.0.1}:9100", f"127.0.0.1:{mock.port}")
    config = yaml.safe_load(text)
    config["binds"][0]["port"] = free_port()
    config["config"] = {"adminPort": free_port(), "metricsPort": free_port(), "readinessPort": free_port()}
    gw = launch(tmp_path_factory.mktemp("readme"), config, mock)
    yield gw
    gw.stack.stop()


def test_readme_has_examples_to_run() -> None:
    assert len(_blocks("sh")) >= 10
    assert _blocks("python")


@pytest.mark.parametrize("script", _blocks("sh"), ids=lambda s: s.strip().splitlines()[0][:60])
def test_readme_shell_example(default_gateway: Gateway, script: str) -> None:
    port = default_gateway.url.rsplit(":", 1)[1]
    runnable = script.replace("localhost:3000", f"127.0.0.1:{port}").replace(
        "curl ", "curl --fail-with-body "
    )
    proc = subprocess.run(["bash", "-ec", runnable], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.strip()
    assert '"error"' not in out, out
    if '"stream":true' in script:
        assert "data: [DONE]" in out, out


@pytest.mark.parametrize("code", _blocks("python"), ids=lambda c: c.strip().splitlines()[0][:60])
def test_readme_python_example(default_gateway: Gateway, code: str) -> None:
    runnable = code.replace("http://localhost:3000", default_gateway.url)
    proc = subprocess.run([sys.executable, "-c", runnable], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Hello from mock" in proc.stdout


def test_readme_ai_policy_example_is_the_default_configs_route() -> None:
    """The `ai` policy the README shows is the one `make run` serves, so its curl shows it working."""
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if b.startswith("- name: assistant")
    )
    (documented,) = yaml.safe_load(block)
    routes = yaml.safe_load(DEFAULT_CONFIG)["binds"][0]["listeners"][0]["routes"]
    assert documented == next(r for r in routes if r["name"] == "assistant")


def test_readme_ai_policy_curl_is_shaped(default_gateway: Gateway) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{default_gateway.url}/assistant/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "gpt-4o-mini"
    sent = json.loads(default_gateway.mock.requests()[-1]["body"])
    assert sent["max_tokens"] == 1024 and sent["temperature"] == 0.2
    assert sent["messages"][0] == {"role": "system", "content": "Be concise."}
    assert sent["messages"][-1] == {"role": "user", "content": "Answer in English."}
