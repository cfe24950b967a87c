"""API keys through the real Envoy: keys made with `gateway keys`, used by bearer or x-api-key,
revoked, added and expired while the gateway runs (no restart), limited to models, optional
routes, inline keys from the environment, and the identity in the usage record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    MOCK_CONTROLS,
    OPENAI_KEY,
    ROOT,
    Gateway,
    launch,
    listener_config,
    provider_route,
    running,
    start_mock,
)

INLINE_ENV = "E2E_APIKEYS_INLINE_KEY"
INLINE_KEY = "sk-gw-e2e-inline-key-from-the-environment-0001"
KEYS_FILE = "api-keys.yaml"  # beside the gateway config: the route names it relative


def two_models(name: str, prefix: str, host: str, **policies: object) -> dict:
    """A route serving gpt-4o-mini and (failing over) gpt-4o, for model limits and the listing."""
    providers = [("mini", "gpt-4o-mini"), ("big", "gpt-4o")]
    groups = [
        {
            "providers": [
                {
                    "name": pname,
                    "provider": {"openAI": {"model": model}},
                    "hostOverride": host,
                    "backendAuth": {"key": OPENAI_KEY},
                }
            ]
        }
        for pname, model in providers
    ]
    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": prefix}}],
        "backends": [{"ai": {"groups": groups}}],
        "policies": {"ai": MOCK_CONTROLS, **policies},
    }


def routes(host: str) -> list[dict]:
    keyed = {"apiKey": {"file": KEYS_FILE}}
    inline = {
        "apiKey": {"keys": [{"key": f"${INLINE_ENV}", "metadata": {"id": "inline-ci", "user": "ci-bot"}}]}
    }
    return [
        two_models("keyed", "/keyed", host, **keyed),
        provider_route(
            "optional",
            "/optional",
            {"openAI": {}},
            host,
            OPENAI_KEY,
            apiKey={"file": KEYS_FILE, "mode": "optional"},
        ),
        provider_route("inline", "/inline", {"openAI": {}}, host, OPENAI_KEY, **inline),
    ]


def keys(workdir: Path, *argv: str) -> str:
    """`gateway keys ...` as an operator runs it, in the gateway's folder."""
    done = subprocess.run(
        [sys.executable, "-m", "extproc", "keys", *argv],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def create(workdir: Path, *argv: str) -> tuple[str, str]:
    """A new key in the gateway's keys file: (id, key)."""
    out = dict(
        line.split(":", 1) for line in keys(workdir, "create", "--file", KEYS_FILE, *argv).splitlines()
    )
    return out["id"].strip(), out["key"].strip()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("auth-apikeys")
    # The authz sidecar inherits the environment: the inline key's $ENV_VAR is read there.
    old = os.environ.get(INLINE_ENV)
    os.environ[INLINE_ENV] = INLINE_KEY
    mock = start_mock()
    config = listener_config(routes(f"127.0.0.1:{mock.port}"), sidecarTimeout="2s")
    create(tmp, "--user", "alice", "--group", "eng", "--team", "platform", "--id", "alice-1")
    create(tmp, "--user", "marketer", "--group", "marketing", "--model", "gpt-4o-mini", "--id", "mini-only")
    try:
        with running([mock], lambda: launch(tmp, config, mock)) as gateway:
            yield gateway
    finally:
        if old is None:
            os.environ.pop(INLINE_ENV, None)
        else:
            os.environ[INLINE_ENV] = old


@pytest.fixture(scope="module")
def alice_key(gw: Gateway) -> str:
    # A key made before the gateway started is in its first load; this one shows that a key
    # made while it runs is picked up (and gives the tests a key of their own to use).
    _, key = create(gw.stack.workdir, "--user", "alice", "--group", "eng", "--id", "alice-live")
    until(lambda: chat(gw, "/keyed", bearer=key).status_code == 200)
    return key


def chat(
    gw: Gateway, prefix: str, model: str = "gpt-4o-mini", *, bearer: str | None = None, **headers: str
) -> httpx.Response:
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}{prefix}/v1/chat/completions", json=body, headers=headers, timeout=20)


def until(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``check`` holds (the keys file is polled about once a second)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not within the reload window"
        time.sleep(0.1)
    return time.monotonic() - start


def assert_401(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith('Bearer realm="llm-gateway"')
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]  # OpenAI's error shape
    assert err["code"] and err["message"]
    for word in words:
        assert word in err["message"], err


def usage_record(gw: Gateway, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The extproc's JSON line for ``request_id`` on its stdout (tests/e2e/test_pipeline.py)."""
    log = Path(gw.stack.workdir) / "extproc.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {request_id}")


# --- using a key ----------------------------------------------------------------------------------


def test_a_key_made_with_the_cli_passes_and_is_in_the_usage_record(gw: Gateway, alice_key: str) -> None:
    resp = chat(gw, "/keyed", bearer=alice_key)
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert (record["api_key_id"], record["user_id"]) == ("alice-live", "alice")
    assert alice_key not in (gw.stack.workdir / "extproc.log").read_text()
    assert all(alice_key not in m["headers"].get("authorization", "") for m in gw.mock.requests())


def test_a_key_by_x_api_key(gw: Gateway, alice_key: str) -> None:
    assert chat(gw, "/keyed", **{"x-api-key": alice_key}).status_code == 200


def test_no_key_is_401_with_a_challenge(gw: Gateway) -> None:
    assert_401(chat(gw, "/keyed"), "credentials")


def test_a_wrong_key_is_401(gw: Gateway) -> None:
    assert_401(chat(gw, "/keyed", bearer="sk-gw-not-a-key-anyone-made"), "invalid API key")
    assert_401(chat(gw, "/keyed", **{"x-api-key": "sk-gw-not-a-key-anyone-made"}), "invalid API key")


def test_a_key_in_the_query_string_is_refused_and_not_logged(gw: Gateway, alice_key: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    envoy_log = gw.stack.workdir / "envoy.log"

    def refused_lines() -> int:  # Envoy's JSON access log: refused before the pipeline, so no ids
        marks = ('"status":401', '"upstream_path":"/keyed/v1/chat/completions"')
        return sum(all(m in line for m in marks) for line in envoy_log.read_text().splitlines())

    before = refused_lines()
    for param in ("api_key", "key", "x-api-key"):
        url = f"{gw.url}/keyed/v1/chat/completions?{param}={alice_key}"
        headers = {"authorization": f"Bearer {alice_key}", "x-request-id": f"query-key-{param}"}
        resp = httpx.post(url, json=body, headers=headers, timeout=20)
        assert_401(resp, "header")
        assert alice_key not in resp.text
    # Envoy writes its access log file every few seconds: wait for these requests' lines.
    until(lambda: refused_lines() >= before + 3, timeout=20)
    for name in ("envoy.log", "authz.log", "extproc.log"):
        assert alice_key not in (gw.stack.workdir / name).read_text(), name


# --- keys change while the gateway runs ---------------------------------------------------------


def test_a_revoked_key_stops_working_within_seconds(gw: Gateway) -> None:
    key_id, key = create(gw.stack.workdir, "--user", "dave", "--id", "to-revoke")
    until(lambda: chat(gw, "/keyed", bearer=key).status_code == 200)
    keys(gw.stack.workdir, "revoke", "--file", KEYS_FILE, key_id)
    took = until(lambda: chat(gw, "/keyed", bearer=key).status_code == 401)
    assert took < 3, took
    assert_401(chat(gw, "/keyed", bearer=key), "revoked")


def test_an_expired_key_is_401(gw: Gateway) -> None:
    _, key = create(gw.stack.workdir, "--user", "erin", "--expires", "4s")
    until(lambda: chat(gw, "/keyed", bearer=key).status_code == 200)
    until(lambda: chat(gw, "/keyed", bearer=key).status_code == 401, timeout=8)
    assert_401(chat(gw, "/keyed", bearer=key), "expired")


def test_keys_list_shows_status_without_hashes(gw: Gateway, alice_key: str) -> None:
    out = keys(gw.stack.workdir, "list", "--file", KEYS_FILE)
    assert "alice-live" in out and "mini-only" in out and "gpt-4o-mini" in out
    assert "sha256" not in out and alice_key not in out


# --- model limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_key(gw: Gateway) -> str:
    _, key = create(gw.stack.workdir, "--user", "mia", "--model", "gpt-4o-mini", "--id", "mini-live")
    until(lambda: chat(gw, "/keyed", bearer=key).status_code == 200)
    return key


def test_a_key_limited_to_a_model_gets_403_for_another(gw: Gateway, mini_key: str) -> None:
    assert chat(gw, "/keyed", "gpt-4o-mini", bearer=mini_key).status_code == 200
    resp = chat(gw, "/keyed", "gpt-4o", bearer=mini_key)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "model_not_allowed"
    assert "mini-live" in resp.json()["error"]["message"]


def test_the_models_listing_shows_only_the_keys_models(gw: Gateway, mini_key: str, alice_key: str) -> None:
    def listed(key: str) -> list[str]:
        resp = httpx.get(f"{gw.url}/keyed/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=20)
        assert resp.status_code == 200, resp.text
        return sorted(m["id"] for m in resp.json()["data"])

    assert listed(mini_key) == ["gpt-4o-mini"]
    assert listed(alice_key) == ["gpt-4o", "gpt-4o-mini"]  # no allowedModels: every model
    assert_401(httpx.get(f"{gw.url}/keyed/v1/models", timeout=20))


# --- optional mode, inline keys ---------------------------------------------------------------------


def test_an_optional_route_passes_anonymous_callers_but_not_bad_keys(gw: Gateway, alice_key: str) -> None:
    resp = chat(gw, "/optional")
    assert resp.status_code == 200, resp.text
    assert usage_record(gw, resp.headers["x-gateway-request-id"])["api_key_id"] is None
    assert_401(chat(gw, "/optional", bearer="sk-gw-not-a-key-anyone-made"), "invalid API key")
    resp = chat(gw, "/optional", bearer=alice_key)
    assert resp.status_code == 200
    assert usage_record(gw, resp.headers["x-gateway-request-id"])["api_key_id"] == "alice-live"


def test_an_inline_key_from_the_environment(gw: Gateway, alice_key: str) -> None:
    resp = chat(gw, "/inline", bearer=INLINE_KEY)
    assert resp.status_code == 200, resp.text
    record = usage_record(gw, resp.headers["x-gateway-request-id"])
    assert (record["api_key_id"], record["user_id"]) == ("inline-ci", "ci-bot")
    assert_401(chat(gw, "/inline", bearer=f"${INLINE_ENV}"), "invalid API key")
    assert_401(
        chat(gw, "/inline", bearer=alice_key), "invalid API key"
    )  # the file's keys are another route's
