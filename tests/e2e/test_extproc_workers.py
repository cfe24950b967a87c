"""Several extproc workers share one port (SO_REUSEPORT), through the real Envoy, with a warning."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from extproc import cpu_affinity, ports
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


def _thread_cpus(pid: int) -> set[str]:
    """Cpus_allowed_list of every thread of a process (grpc's, the writers', the event loop's)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":")[1].strip())
    return out


@pytest.mark.skipif(
    len(cpu_affinity.allowed()) < 2,
    reason="two workers on two different CPUs need a machine with two (CI's has two); on one, "
    "pinned and unpinned threads both show CPU 0 and the test could not fail",
)
def test_extproc_cpus_keeps_each_worker_on_its_own_cpu_and_requests_are_answered(
    tmp_path: Path, mocks: tuple[Mock, Mock, Mock]
) -> None:
    config = listener_config(
        [provider_route("openai", "/openai", {"openAI": {}}, f"127.0.0.1:{mocks[0].port}", OPENAI_KEY)]
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cpus = cpu_affinity.parse("auto")
    assert cpus is not None
    stack = Stack(
        str(path), tmp_path, extproc_port=free_port(), authz_port=free_port(), mock_port=None,
        extproc_workers=2, extproc_cpus=cpus[:2], quiet=True,
    )  # fmt: skip
    stack.start(timeout=30)
    try:
        url = f"http://127.0.0.1:{config['binds'][0]['port']}/openai/v1/chat/completions"
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(4):
            resp = httpx.post(url, json=chat, timeout=20)
            assert resp.status_code == 200, resp.text
        # Every thread, those started to serve the requests included, on the worker's one CPU.
        assert _thread_cpus(stack.procs["extproc"].pid) == {str(cpus[0])}
        assert _thread_cpus(stack.procs["extproc-1"].pid) == {str(cpus[1])}
        assert _thread_cpus(stack.procs["authz"].pid) != {str(cpus[0])}  # only extproc workers
    finally:
        stack.stop()


def test_gateway_run_refuses_a_cpu_it_may_not_use_before_starting_anything(tmp_path: Path) -> None:
    config = listener_config([provider_route("openai", "/openai", {"openAI": {}}, "127.0.0.1:9", OPENAI_KEY)])
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    extproc_port = free_port()
    argv = [sys.executable, "-m", "extproc", "run", "--config", str(path), "--workdir", str(tmp_path / "run")]
    argv += ["--no-mock", "--extproc-port", str(extproc_port), "--extproc-cpus", "4095"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "gateway: --extproc-cpus '4095': CPU 4095 is not one this process may use" in done.stderr
    assert ports.listening_pids(extproc_port) == []
