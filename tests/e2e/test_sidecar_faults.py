"""Replies Envoy makes on its own, through the real Envoy: a frozen or dead sidecar, a provider that
resets or refuses the connection. Each is the client API's error JSON (OpenAI's or Anthropic's, by
the client's path), in words a client can act on, never Envoy's internal details; the access log
keeps those."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Gateway,
    access_log_entry,
    free_port,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

SIDECAR_TIMEOUT = 1.0
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 8}

# What Envoy's own details look like: never in what a client reads.
INTERNALS = re.compile(r"[{}%]|ext_proc|ext_authz|grpc|upstream_|reset_before|_error_|delayed_connect", re.I)


class Closer:
    """A "provider" that accepts each connection, reads a little and closes it: a reset mid-request."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)

    def close(self) -> None:
        self.sock.close()


def routes(host: str, closer: Closer, refused: int) -> list[dict]:
    access = {"modelAccess": {"default": ["gpt-4o-mini"]}}
    return [
        provider_route("openai", "/openai", {"openAI": {}}, host, OPENAI_KEY),
        provider_route("anthropic", "/anthropic", {"anthropic": {}}, host, ANTHROPIC_KEY),
        provider_route("checked", "/checked", {"openAI": {}}, host, OPENAI_KEY, **access),
        provider_route(
            "checked-messages", "/checked-messages", {"anthropic": {}}, host, ANTHROPIC_KEY, **access
        ),
        provider_route("reset", "/reset", {"openAI": {}}, f"127.0.0.1:{closer.port}", OPENAI_KEY),
        provider_route("refused", "/refused", {"anthropic": {}}, f"127.0.0.1:{refused}", ANTHROPIC_KEY),
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mock, closer = start_mock(), Closer()
    config = listener_config(
        routes(f"127.0.0.1:{mock.port}", closer, free_port()), sidecarTimeout=f"{SIDECAR_TIMEOUT}s"
    )
    tmp = tmp_path_factory.mktemp("sidecar-faults")
    try:
        with running([mock], lambda: launch(tmp, config, mock)) as gateway:
            yield gateway
    finally:
        closer.close()


def chat(gw: Gateway, prefix: str) -> httpx.Response:
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=CHAT, timeout=20)


def messages(gw: Gateway, prefix: str) -> httpx.Response:
    return httpx.post(f"{gw.url}{prefix}/v1/messages", json=MESSAGES, timeout=20)


def openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["message"] and err["type"] and err["code"], err
    assert not INTERNALS.search(err["message"]) and not INTERNALS.search(err["code"]), err
    return err


def anthropic_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers
    body = resp.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    err = body["error"]
    assert err["message"] and err["type"], err
    assert not INTERNALS.search(err["message"]), err
    return err


@contextmanager
def frozen(gw: Gateway, name: str) -> Iterator[None]:
    """The sidecar's process stopped (SIGSTOP): it holds its connections and answers nothing."""
    pid = gw.stack.procs[name].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_frozen_extproc_is_a_json_503_in_each_client_shape(gw: Gateway) -> None:
    assert chat(gw, "/openai").status_code == 200
    with frozen(gw, "extproc"):
        started = time.monotonic()
        err = openai_error(chat(gw, "/openai"), 503)
        assert time.monotonic() - started < SIDECAR_TIMEOUT + 2
        assert err["type"] == "service_unavailable" and err["code"] == "gateway_unavailable"
        assert "retry" in err["message"]
        # Anthropic's API on a route that translates nothing, and OpenAI's on one that does.
        assert anthropic_error(messages(gw, "/anthropic"), 503)["type"] == "overloaded_error"
        assert openai_error(chat(gw, "/anthropic"), 503)["code"] == "gateway_unavailable"
    assert chat(gw, "/openai").status_code == 200


def test_a_frozen_authz_is_a_json_503_that_does_not_blame_the_client(gw: Gateway) -> None:
    assert chat(gw, "/checked").status_code == 200
    with frozen(gw, "authz"):
        err = openai_error(chat(gw, "/checked"), 503)
        assert err["code"] == "gateway_unavailable" and "authoriz" in err["message"]
        assert anthropic_error(messages(gw, "/checked-messages"), 503)["type"] == "overloaded_error"
        assert chat(gw, "/openai").status_code == 200  # open routes never ask authz
    assert chat(gw, "/checked").status_code == 200


def test_a_provider_that_resets_the_connection(gw: Gateway) -> None:
    err = openai_error(chat(gw, "/reset"), 503)
    assert err["code"] == "provider_connection_closed", err


def test_a_provider_that_refuses_connections(gw: Gateway) -> None:
    err = anthropic_error(messages(gw, "/refused"), 503)
    assert "connect" in err["message"], err
    assert openai_error(chat(gw, "/refused"), 503)["code"] == "provider_unreachable"


def test_no_route_is_a_json_404(gw: Gateway) -> None:
    resp = httpx.post(f"{gw.url}/nowhere/v1/chat/completions", json=CHAT, timeout=20)
    assert openai_error(resp, 404)["type"] == "not_found_error"


def test_the_access_log_keeps_envoys_details(gw: Gateway) -> None:
    """What the client is not told is in the log: which sidecar failed, and how."""
    with frozen(gw, "extproc"):
        chat(gw, "/openai")
    chat(gw, "/reset")
    for wanted in ("ext_proc_error_per-message_timeout_exceeded", "upstream_reset_before_response_started"):
        entry = access_log_entry(gw, lambda e, w=wanted: w in (e["details"] or ""))
        assert entry["status"] == 503, entry
