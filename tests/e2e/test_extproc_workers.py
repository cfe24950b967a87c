"""Several extproc workers share one port (SO_REUSEPORT), through the real Envoy, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import yaml

from extproc import ports
from extproc.supervisor import Stack
from tests.e2e.conftest import OPENAI_KEY, Mock, free_port, listener_config, provider_route


def test_two_extproc_workers_share_the_port(
    tmp_path: Path, mocks: tuple[Mock, Mock, Mock], caplog: pytest.LogCaptureFixture
) -> None:
    mock = mocks[0]
    config = listener_config(
        [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mock.port}", OPENAI_KEY)]
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    stack = Stack(
        str(path),
        tmp_path,
        extproc_port=free_port(),
        authz_port=free_port(),
        mock_port=None,
        extproc_workers=2,
        quiet=True,
    )
    with caplog.at_level(logging.WARNING, logger="gateway.supervisor"):
        stack.start(timeout=30)
    try:
        workers = sorted(p.pid for name, p in stack.procs.items() if name.startswith("extproc"))
        assert len(workers) == 2
        assert all(stack.procs[n].poll() is None for n in ("extproc", "extproc-1"))
        assert ports.listening_pids(stack.extproc_port) == workers
        url = f"http://127.0.0.1:{config['binds'][0]['port']}/openai/v1/chat/completions"
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            resp = httpx.post(url, json=chat, timeout=20)
            assert resp.status_code == 200, resp.text
    finally:
        stack.stop()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "gateway.supervisor"]
    assert warning.startswith("2 extproc workers: in-process state")
    assert "only correct with one worker" in warning and "Redis" in warning and "multiprocess" in warning
