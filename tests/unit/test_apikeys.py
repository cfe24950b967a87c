"""The apiKey authenticator, the keys file and its store, and `gateway keys` (no Envoy here)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import stat
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2 as pb
from pydantic import ValidationError

from extproc.authz.apikeys import ApiKeyAuthenticator
from extproc.authz.caller import Caller, Unauthenticated
from extproc.authz.keyfile import KeyFileStore, digest_of, hash_key, parse_keys, read_keys
from extproc.authz.keys_cli import parse_expiry
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest
from extproc.cli import main
from extproc.config.auth import ApiKeyEntry, ApiKeyPolicy
from extproc.config.loader import ConfigError

KEY = "sk-gw-unit-test-key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "sk-gw-unit-test-key-bbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def request(headers: dict[str, str] | None = None, path: str = "/v1/chat/completions") -> AuthRequest:
    return AuthRequest(
        check=pb.CheckRequest(), route=None, method="POST", path=path, headers=headers or {}, body=b""
    )


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def record(key: str, id: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "hash": hash_key(key), **extra}


def write_file(path: Path, keys: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"version": 1, "keys": keys}))


async def authenticate(
    policy: dict[str, Any], req: AuthRequest, config_dir: Path = Path("/")
) -> Caller | None:
    ctx = AuthContext(config_dir)
    auth = ApiKeyAuthenticator(ApiKeyPolicy.model_validate(policy), ctx)
    try:
        await auth.start()
        return await auth.authenticate(req)
    finally:
        await ctx.close()


def refused(policy: dict[str, Any], req: AuthRequest, config_dir: Path = Path("/")) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as exc:
        run(authenticate(policy, req, config_dir))
    assert exc.value.status == 401
    assert exc.value.headers["www-authenticate"].startswith("Bearer ")
    return exc.value


# --- hashes -----------------------------------------------------------------------------------


def test_the_hash_format_is_sha256_hex() -> None:
    h = hash_key(KEY)
    assert h == "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
    assert digest_of(h.upper().replace("SHA256", "sha256")) == hashlib.sha256(KEY.encode()).digest()


@pytest.mark.parametrize("bad", ["", "sha256:abc", "md5:" + "0" * 32, "0" * 64, "sha256:" + "g" * 64])
def test_a_malformed_hash_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        digest_of(bad)
    with pytest.raises(ValidationError, match="keyHash is sha256"):
        ApiKeyEntry.model_validate({"keyHash": bad})


# --- inline keys --------------------------------------------------------------------------------

INLINE = {
    "keys": [
        {
            "key": KEY,
            "metadata": {
                "id": "ci",
                "user": "alice",
                "groups": ["eng", "ops"],
                "team": "platform",
                "tier": "gold",
            },
            "allowedModels": ["gpt-4o-mini"],
        }
    ]
}


def test_an_inline_key_by_bearer_is_the_caller() -> None:
    caller = run(authenticate(INLINE, request(bearer(KEY))))
    assert caller is not None
    assert (caller.method, caller.api_key_id, caller.subject) == ("api_key", "ci", "alice")
    assert (caller.groups, caller.team, caller.allowed_models) == (
        ["eng", "ops"],
        "platform",
        ["gpt-4o-mini"],
    )
    # CEL's apiKey: the identity and the inline metadata, never the key.
    assert caller.api_key["tier"] == "gold"
    assert caller.api_key["group"] == "eng"
    assert KEY not in str(caller.api_key)


def test_an_inline_key_by_x_api_key() -> None:
    caller = run(authenticate(INLINE, request({"x-api-key": KEY})))
    assert caller is not None and caller.api_key_id == "ci"


def test_no_credential_is_none_and_a_jwt_bearer_is_not_ours() -> None:
    assert run(authenticate(INLINE, request())) is None
    assert run(authenticate(INLINE, request({"authorization": "Basic dXNlcjpwYXNz"}))) is None
    head = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
    assert run(authenticate(INLINE, request(bearer(f"{head}.e30.c2ln")))) is None


def test_a_wrong_key_is_401_without_the_key_in_the_message() -> None:
    err = refused(INLINE, request(bearer(OTHER)))
    assert OTHER not in err.message
    refused(INLINE, request({"x-api-key": OTHER}))


def test_an_oversized_key_is_401() -> None:
    refused(INLINE, request(bearer("k" * 10_000)))


def test_an_optional_route_still_refuses_a_bad_key() -> None:
    policy = {**INLINE, "mode": "optional"}
    assert run(authenticate(policy, request())) is None
    refused(policy, request(bearer(OTHER)))


def test_an_inline_key_hash() -> None:
    policy = {"keys": [{"keyHash": hash_key(KEY), "metadata": {"user": "bob"}}]}
    caller = run(authenticate(policy, request(bearer(KEY))))
    assert caller is not None and caller.subject == "bob"
    assert caller.api_key_id == "inline-0"  # no metadata.id: named by position, nothing from the key
    assert caller.allowed_models is None


def test_an_inline_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = {"keys": [{"key": "$UNIT_APIKEY_SECRET", "metadata": {"id": "env"}}]}
    monkeypatch.setenv("UNIT_APIKEY_SECRET", KEY)
    caller = run(authenticate(policy, request(bearer(KEY))))
    assert caller is not None and caller.api_key_id == "env"
    refused(policy, request(bearer("$UNIT_APIKEY_SECRET")))  # the reference is not the key


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_environment_key_is_no_key(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    policy = {"keys": [{"key": "$UNIT_APIKEY_SECRET"}]}
    monkeypatch.delenv("UNIT_APIKEY_SECRET", raising=False)
    if value is not None:
        monkeypatch.setenv("UNIT_APIKEY_SECRET", value)
    auth = ApiKeyAuthenticator(ApiKeyPolicy.model_validate(policy), AuthContext(Path("/")))
    run(auth.start())
    assert auth.inline == {}
    assert auth.lookup("") is None


# --- a key in the URL -----------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["api_key", "key", "x-api-key", "API_KEY", "apikey"])
def test_a_key_in_the_query_string_is_refused_even_with_a_good_header(param: str) -> None:
    err = refused(INLINE, request(bearer(KEY), path=f"/v1/chat/completions?{param}={KEY}"))
    assert "header" in err.message
    assert KEY not in err.message


def test_other_query_parameters_are_fine() -> None:
    assert run(authenticate(INLINE, request(bearer(KEY), path="/v1/models?limit=5"))) is not None


# --- the keys file --------------------------------------------------------------------------------


def test_keys_from_the_file_with_expiry_and_revocation(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    write_file(
        tmp_path / "keys.yaml",
        [
            record(KEY, "good", user="alice", group="eng", expires=(now + timedelta(days=1)).isoformat()),
            record(OTHER, "old", user="bob", expires=(now - timedelta(seconds=1)).isoformat()),
            record("sk-gw-revoked", "gone", user="carol", revoked=now.isoformat()),
            record("sk-gw-revoked-bool", "gone2", revoked=True),
        ],
    )
    policy = {"file": "keys.yaml"}  # relative: the config file's folder
    caller = run(authenticate(policy, request(bearer(KEY)), tmp_path))
    assert caller is not None and (caller.api_key_id, caller.subject, caller.groups) == (
        "good",
        "alice",
        ["eng"],
    )
    assert "expired" in refused(policy, request(bearer(OTHER)), tmp_path).message
    assert "revoked" in refused(policy, request(bearer("sk-gw-revoked")), tmp_path).message
    assert "revoked" in refused(policy, request(bearer("sk-gw-revoked-bool")), tmp_path).message


def test_a_date_expiry_is_midnight_utc() -> None:
    parsed = parse_keys(
        "version: 1\nkeys:\n- {id: a, hash: '" + hash_key(KEY) + "', expires: 2027-01-01}\n", "f"
    )
    assert parsed.keys[0].expires == datetime(2027, 1, 1, tzinfo=UTC)


def test_inline_and_file_keys_together(tmp_path: Path) -> None:
    write_file(tmp_path / "keys.yaml", [record(OTHER, "from-file")])
    policy = {**INLINE, "file": str(tmp_path / "keys.yaml")}
    assert run(authenticate(policy, request(bearer(KEY)))).api_key_id == "ci"
    assert run(authenticate(policy, request(bearer(OTHER)))).api_key_id == "from-file"


def test_a_missing_file_is_no_keys_not_a_crash(tmp_path: Path) -> None:
    refused({"file": "nope.yaml"}, request(bearer(KEY)), tmp_path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\nkeys:\n- id: a\n  hash: sha256:12\n", "f.yaml:4: keys[0].hash: a key hash is sha256"),
        (
            "version: 1\nkeys:\n- id: a\n  hash: HASH\n  colour: red\n",
            "f.yaml:5: keys[0].colour: unknown field",
        ),
        (
            "version: 1\nkeys:\n- id: a\n  hash: HASH\n- id: a\n  hash: HASH2\n",
            "f.yaml:5: keys[1].id: duplicate id",
        ),
        ("version: 2\nkeys: []\n", "f.yaml:1: version"),
        ("version: 1\nkeys:\n- id: a\n  hash: HASH\n  expires: soon\n", "f.yaml:5: keys[0].expires"),
        ("version: 1\nkeys: [\n", "f.yaml:3: invalid YAML"),
        ("- just a list\n", "f.yaml:1: the keys file must be a mapping"),
    ],
)
def test_a_malformed_file_names_file_line_and_field(text: str, where: str) -> None:
    text = text.replace("HASH2", hash_key(OTHER)).replace("HASH", hash_key(KEY))
    with pytest.raises(ConfigError) as exc:
        parse_keys(text, "f.yaml")
    assert any(str(i).startswith(where) for i in exc.value.issues), exc.value.issues


def test_a_malformed_file_keeps_the_last_good_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.yaml"
    good = f"version: 1\nkeys:\n- id: good\n  hash: {hash_key(KEY)}\n"
    path.write_text(good)
    store = KeyFileStore(path)

    async def go() -> None:
        assert await store.refresh()
        assert await store.refresh() is False  # unchanged: not read again
        path.write_text(good + "  colour: red\n")
        with caplog.at_level(logging.ERROR, "gateway.authz"):
            assert await store.refresh() is False
        assert next(iter(store.keys.values())).id == "good"
        assert f"{path}:5: keys[0].colour: unknown field" in caplog.text
        write_file(path, [record(OTHER, "next")])  # fixed: the new keys replace the old
        assert await store.refresh()
        assert [k.id for k in store.keys.values()] == ["next"]
        path.unlink()  # deleted: no keys (deleting the file must not keep them working)
        assert await store.refresh()
        assert store.keys == {}

    run(go())


def test_an_unreadable_file_keeps_the_last_good_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    write_file(path, [record(KEY, "good")])
    store = KeyFileStore(path)
    run(store.refresh())
    path.unlink()
    path.mkdir()  # there, but open() fails (as a file the sidecar's user may not read would)
    with caplog.at_level(logging.ERROR, "gateway.authz"):
        assert run(store.refresh()) is False
    assert len(store.keys) == 1
    assert f"cannot read {path}" in caplog.text


def test_the_watcher_picks_up_a_new_and_a_revoked_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    write_file(path, [record(KEY, "first")])

    async def go() -> None:
        ctx = AuthContext(tmp_path)
        auth = ApiKeyAuthenticator(ApiKeyPolicy.model_validate({"file": "keys.yaml"}), ctx)
        assert auth.store is not None
        auth.store.interval = 0.05
        await auth.start()
        try:
            assert await auth.authenticate(request(bearer(KEY)))
            write_file(path, [record(KEY, "first", revoked=True), record(OTHER, "second")])
            deadline = time.monotonic() + 3
            while auth.lookup(OTHER) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert (await auth.authenticate(request(bearer(OTHER)))).api_key_id == "second"
            with pytest.raises(Unauthenticated, match="revoked"):
                await auth.authenticate(request(bearer(KEY)))
        finally:
            await ctx.close()

    run(go())


# --- the CLI --------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["keys", *argv])
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_cli_create_list_revoke_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policies" / "api-keys.yaml"
    f = str(path)
    code, out, err = cli(
        capsys, "create", "--file", f, "--user", "alice", "--group", "eng", "--group", "ops",
        "--team", "platform", "--model", "gpt-4o-mini", "--label", "env=dev", "--expires", "30d", "--id", "ci-1",
    )  # fmt: skip
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in out.splitlines())
    key = lines["key"].strip()
    assert lines["id"].strip() == "ci-1" and key.startswith("sk-gw-") and len(key) > 40
    assert "only once" in err
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []

    stored = read_keys(path).keys[0]
    assert (stored.user, stored.groups, stored.team, stored.allowed_models) == (
        "alice", ["eng", "ops"], "platform", ["gpt-4o-mini"],
    )  # fmt: skip
    assert stored.labels == {"env": "dev"}
    assert stored.expires is not None
    assert timedelta(days=29) < stored.expires - datetime.now(UTC) <= timedelta(days=30)

    code, out, _ = cli(capsys, "create", "--file", f, "--user", "bob")
    assert code == 0
    code, out, _ = cli(capsys, "list", "--file", f)
    assert code == 0
    assert "ci-1" in out and "alice" in out and "eng,ops" in out and "gpt-4o-mini" in out and "active" in out
    assert "sha256" not in out

    policy = {"file": f}
    assert run(authenticate(policy, request(bearer(key)))).api_key_id == "ci-1"
    code, out, _ = cli(capsys, "revoke", "--file", f, "ci-1")
    assert code == 0 and "revoked ci-1" in out
    assert "revoked" in refused(policy, request(bearer(key))).message
    code, out, _ = cli(capsys, "list", "--file", f)
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("ci-1")] == ["revoked"]
    assert len(read_keys(path).keys) == 2  # revoking keeps the record (and the other key)


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = str(tmp_path / "k.yaml")
    assert cli(capsys, "create", "--file", f, "--user", "a", "--id", "x1")[0] == 0
    code, _, err = cli(capsys, "create", "--file", f, "--user", "a", "--id", "x1")
    assert code == 1 and "already has a key" in err
    assert cli(capsys, "create", "--file", f, "--user", "a", "--id", "bad id")[0] == 2
    assert cli(capsys, "create", "--file", f, "--user", "a", "--expires", "2001-01-01")[0] == 2
    assert cli(capsys, "revoke", "--file", f, "nobody")[0] == 1
    Path(f).write_text("version: 1\nkeys: {}\n")
    code, _, err = cli(capsys, "list", "--file", f)
    assert code == 2 and f"{f}:2: keys" in err


def test_cli_keeps_a_group_readable_file_group_readable_and_never_world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("version: 1\nkeys: []\n")
    path.chmod(0o644)
    assert cli(capsys, "create", "--file", str(path), "--user", "a")[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_expiry_forms() -> None:
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2027-01-01", now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01T08:00:00+02:00", now) == datetime(2027, 1, 1, 6, tzinfo=UTC)
    for bad in ("2026-01-01", "0d", "soon"):
        with pytest.raises(ValueError):
            parse_expiry(bad, now)
