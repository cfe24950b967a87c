"""jwtAuth, driven directly: key sets (inline, file, URL), every bad token, the modes, the
identity from Keycloak's claims, and the JWKS cache (refetch on an unknown kid, rate limit,
single flight, the IdP down, a key set that changes mid-load)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as pb

from extproc.authz.caller import Caller, Unauthenticated, Unavailable
from extproc.authz.jwks import FileJwks, JwksError, UrlJwks, parse_jwks
from extproc.authz.jwt_auth import MAX_TOKEN_BYTES, JwtAuthenticator, claim, groups_of
from extproc.authz.mechanism import AuthContext
from extproc.authz.request import AuthRequest
from extproc.config.auth import JwtAuthPolicy
from tests.keycloak_fake import (
    AUDIENCE,
    FakeKeycloak,
    claims,
    ec_key,
    encryption_jwk,
    hs256_with_public_key,
    jwks,
    rsa_key,
    sign,
    unsigned,
)

ISS = "http://keycloak.test/realms/mcp-realm"
RSA1 = rsa_key("rsa-1")
RSA2 = rsa_key("rsa-2")
EC1 = ec_key("ec-1")
STRANGER = rsa_key("rsa-1")  # same kid, another key: a forged signature


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def request(token: str | None, scheme: str = "Bearer") -> AuthRequest:
    headers = {"authorization": f"{scheme} {token}"} if token is not None else {}
    return AuthRequest(
        check=pb.CheckRequest(),
        route=None,
        method="POST",
        path="/openai/v1/chat/completions",
        headers=headers,
        body=b"",
    )


def policy(jwks_spec: Any = None, **extra: Any) -> JwtAuthPolicy:
    spec = jwks_spec if jwks_spec is not None else jwks(RSA1, EC1, extra=[encryption_jwk()])
    return JwtAuthPolicy.model_validate({"issuer": ISS, "audiences": [AUDIENCE], "jwks": spec, **extra})


async def authenticate(
    pol: JwtAuthPolicy, token: str | None, ctx: AuthContext | None = None
) -> Caller | None:
    ctx = ctx or AuthContext(Path("."))
    auth = JwtAuthenticator(pol, ctx)
    try:
        await auth.start()
        return await auth.authenticate(request(token))
    finally:
        await ctx.close()


def refused(pol: JwtAuthPolicy, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        run(authenticate(pol, token))
    denial = info.value
    assert denial.status == 401
    assert denial.headers["www-authenticate"].startswith("Bearer ")
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in denial.message, "a denial must not quote the token"
    return denial.message


# --- key sets -----------------------------------------------------------------------------------


def test_keycloak_jwks_parses_signing_keys_and_skips_the_encryption_key() -> None:
    keyset = parse_jwks(json.dumps(jwks(RSA1, EC1, extra=[encryption_jwk("enc")])))
    assert keyset.kids == ["ec-1", "rsa-1"]
    assert set(keyset.find("rsa-1")[0].by_alg) == {"RS256"}  # the key's declared alg only
    assert keyset.find("enc") == []


def test_symmetric_keys_are_never_used() -> None:
    oct_key = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256"}
    assert parse_jwks({"keys": [RSA1.jwk(), oct_key]}).kids == ["rsa-1"]
    with pytest.raises(JwksError, match="no usable signing keys"):
        parse_jwks({"keys": [oct_key]})


def test_an_rsa_key_without_alg_serves_every_rsa_algorithm() -> None:
    bare = {k: v for k, v in RSA1.jwk().items() if k != "alg"}
    key = parse_jwks({"keys": [bare]}).find("rsa-1")[0]
    assert {"RS256", "PS256", "RS512"} <= set(key.by_alg)
    assert key.for_alg("ES256") is None


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ('{"keys": [', r"not JSON \(line 1"),
        ("[]", "not a JSON Web Key Set"),
        ({"keys": ["x"]}, r"keys\[0\]: not a JSON object"),
        ({"keys": [{"kty": "RSA", "kid": "broken", "e": "AQAB"}]}, r"keys\[0\] \(kid 'broken'\)"),
    ],
)
def test_a_bad_key_set_is_refused_whole(doc: Any, error: str) -> None:
    with pytest.raises(JwksError, match=error):
        parse_jwks(doc)


def test_one_malformed_key_fails_the_whole_set() -> None:
    # Skipping it would load a set with fewer keys than the IdP published.
    broken = {**RSA2.jwk(), "n": "!!"}
    with pytest.raises(JwksError, match=r"keys\[1\]"):
        parse_jwks({"keys": [RSA1.jwk(), broken]})


# --- valid tokens and the identity ----------------------------------------------------------------


def test_a_valid_keycloak_token_gives_the_caller() -> None:
    body = claims(ISS, "alice", groups=["/engineering", "/platform/sre"])
    caller = run(authenticate(policy(), sign(RSA1, body)))
    assert caller is not None and caller.method == "jwt"
    assert caller.subject == body["sub"]
    assert caller.groups == ["engineering", "platform/sre"]  # Keycloak's leading "/" dropped
    assert caller.claims["preferred_username"] == "alice"
    assert caller.api_key_id == "" and caller.allowed_models is None


def test_an_ec_signed_token_is_accepted() -> None:
    caller = run(authenticate(policy(), sign(EC1, claims(ISS, "bob", groups=["/marketing"]))))
    assert caller is not None and caller.groups == ["marketing"]


def test_groups_fall_back_to_realm_roles_and_identity_paths_are_configurable() -> None:
    pol = policy(claims={"subject": "preferred_username", "team": "org.team"})
    body = claims(ISS, "carol", groups=None, roles=["analyst"], org={"team": "finance"})
    del body["groups"]
    caller = run(authenticate(pol, sign(RSA1, body)))
    assert caller is not None
    assert (caller.subject, caller.groups, caller.team) == ("carol", ["analyst"], "finance")


def test_claim_paths() -> None:
    body = {"https://example.com/groups": ["a"], "realm_access": {"roles": ["r"]}, "groups": "/solo"}
    assert claim(body, "https://example.com/groups") == ["a"]  # a claim named like a path
    assert claim(body, "realm_access.roles") == ["r"]
    assert claim(body, "realm_access.missing") is None
    assert groups_of(body, ["nope", "groups"]) == ["solo"]
    assert groups_of({"groups": []}, ["groups", "realm_access.roles"]) == []  # first path that exists


def test_tokens_within_the_leeway_pass() -> None:
    now = int(time.time())
    body = claims(ISS, exp=now - 10, nbf=now + 10, iat=now + 5)
    assert run(authenticate(policy(leeway="30s"), sign(RSA1, body))) is not None
    assert "not valid yet" in refused(policy(leeway="1s"), sign(RSA1, body))
    assert "expired" in refused(policy(leeway="1s"), sign(RSA1, claims(ISS, exp=now - 10)))


def test_other_credentials_are_left_to_other_authenticators() -> None:
    assert run(authenticate(policy(), None)) is None
    assert run(authenticate(policy(), "sk-live-an-api-key")) is None
    assert run(authenticate(policy(), "x" * (MAX_TOKEN_BYTES + 10))) is None  # big, but no JWT


def test_providers_are_chosen_by_issuer() -> None:
    other = "http://other-idp.test/realms/partners"
    pol = JwtAuthPolicy.model_validate(
        {
            "providers": [
                {"issuer": ISS, "jwks": jwks(RSA1)},
                {"issuer": other, "audiences": ["partners"], "jwks": jwks(RSA2)},
            ]
        }
    )
    assert run(authenticate(pol, sign(RSA1, claims(ISS)))) is not None
    assert run(authenticate(pol, sign(RSA2, claims(other, aud="partners")))) is not None
    # A key of one provider does not vouch for the other's issuer.
    assert "signature" in refused(pol, sign(RSA1, claims(other, aud="partners"), kid="rsa-2"))
    assert "unknown" in refused(pol, sign(RSA1, claims(other, aud="partners")))


# --- bad tokens ----------------------------------------------------------------------------------


def good() -> dict[str, Any]:
    return claims(ISS)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        (
            "malformed payload",
            lambda: sign(RSA1, good()).split(".")[0] + ".!!!!.abc",
            "not a well-formed JWT",
        ),
        ("payload not an object", lambda: _raw({"alg": "RS256", "kid": "rsa-1"}, b"[1, 2]"), "well-formed"),
        ("wrong signature", lambda: sign(STRANGER, good()), "signature is invalid"),
        ("tampered claims", lambda: _tamper(sign(RSA1, good())), "signature is invalid"),
        ("alg none", lambda: unsigned(good(), kid="rsa-1"), "algorithm 'none' is not allowed"),
        (
            "HS256 keyed with the RSA public key",
            lambda: hs256_with_public_key(RSA1, good()),
            "'HS256' is not allowed",
        ),
        (
            "alg of another key type",
            lambda: sign(RSA1, good(), alg="RS256", kid="ec-1"),
            "does not fit its key",
        ),
        ("PS256 on an RS256 key", lambda: sign(RSA1, good(), alg="PS256"), "does not fit its key"),
        ("alg outside the allowlist", lambda: sign(RSA1, good(), alg="RS512"), "not allowed on this route"),
        ("expired", lambda: sign(RSA1, claims(ISS, lifetime=-3600)), "expired"),
        ("not yet valid", lambda: sign(RSA1, claims(ISS, nbf=int(time.time()) + 3600)), "not valid yet"),
        (
            "wrong issuer",
            lambda: sign(RSA1, claims("http://evil.test/realms/mcp-realm")),
            "issuer is not trusted",
        ),
        ("no issuer", lambda: sign(RSA1, claims(ISS, iss=None)), "no issuer"),
        ("wrong audience", lambda: sign(RSA1, claims(ISS, aud=["someone-else"])), "audience"),
        ("no audience", lambda: sign(RSA1, claims(ISS, aud=None)), "'aud'"),
        ("no exp", lambda: sign(RSA1, claims(ISS, exp=None)), "required claim 'exp'"),
        ("no subject", lambda: sign(RSA1, claims(ISS, sub=None)), "no subject"),
        ("unknown kid", lambda: sign(RSA2, good()), "signing key (kid) is unknown"),
        ("oversized", lambda: sign(RSA1, claims(ISS, pad="x" * MAX_TOKEN_BYTES)), "larger than"),
    ],
)
def test_bad_tokens_are_401_with_a_reason(name: str, make: Any, reason: str) -> None:
    pol = policy(algorithms=["RS256", "PS256", "ES256"])
    assert reason in refused(pol, make())


def _raw(header: dict[str, Any], payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(json.dumps(header).encode())}.{b64(payload)}.{b64(b'sig')}"


def _tamper(token: str) -> str:
    head, _, sig = token.split(".")
    forged = claims(ISS, "mallory", groups=["/admins"])
    return f"{head}.{unsigned(forged).split('.')[1]}.{sig}"


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none"])
def test_a_policy_cannot_allow_hmac_or_none(alg: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        policy(algorithms=["RS256", alg])


# --- modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["strict", "optional"])
def test_strict_and_optional_refuse_an_invalid_token(mode: str) -> None:
    refused(policy(mode=mode), sign(STRANGER, good()))


@pytest.mark.parametrize("mode", ["strict", "optional", "permissive"])
def test_no_token_is_none_in_every_mode(mode: str) -> None:
    # The chain decides: 401 if any authenticator is strict, anonymous otherwise.
    assert run(authenticate(policy(mode=mode), None)) is None


def test_permissive_takes_an_invalid_token_as_anonymous() -> None:
    pol = policy(mode="permissive")
    assert run(authenticate(pol, sign(STRANGER, good()))) is None
    assert run(authenticate(pol, sign(RSA1, claims(ISS, lifetime=-3600)))) is None
    assert run(authenticate(pol, sign(RSA1, good()))) is not None


# --- verified tokens, remembered -------------------------------------------------------------------


def test_a_token_used_again_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import extproc.authz.jwt_auth as module

    calls = []
    real = module.jwt.decode
    monkeypatch.setattr(module.jwt, "decode", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    token = sign(RSA1, good())

    async def steps() -> None:
        auth = JwtAuthenticator(policy(), AuthContext(Path(".")))
        await auth.start()
        first = await auth.authenticate(request(token))
        assert first is not None
        first.groups.append("admins")  # what one request does with its caller stays there
        first.claims["sub"] = "someone-else"
        again = await auth.authenticate(request(token))
        assert again is not None and again.groups == ["engineering"]
        assert again.claims["sub"] == claims(ISS)["sub"]
        with pytest.raises(Unauthenticated):  # failures are never remembered as successes
            await auth.authenticate(request(sign(STRANGER, good())))

    run(steps())
    assert len(calls) == 2  # alice's token once, the forgery once


def test_a_remembered_token_expires_on_time() -> None:
    exp = int(time.time()) + 2
    token = sign(RSA1, claims(ISS, exp=exp))

    async def steps() -> None:
        auth = JwtAuthenticator(policy(leeway=0), AuthContext(Path(".")))
        await auth.start()
        assert await auth.authenticate(request(token)) is not None
        assert await auth.authenticate(request(token)) is not None  # remembered
        await asyncio.sleep(exp - time.time() + 0.2)
        with pytest.raises(Unauthenticated, match="expired"):
            await auth.authenticate(request(token))

    run(steps())


# --- a URL key set ------------------------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[FakeKeycloak]:
    fake = FakeKeycloak()
    fake.serve("mcp-realm", RSA1, EC1, extra=[encryption_jwk()])
    yield fake
    fake.close()


def url_policy(idp: FakeKeycloak, realm: str = "mcp-realm", **extra: Any) -> JwtAuthPolicy:
    return JwtAuthPolicy.model_validate(
        {"issuer": idp.issuer(realm), "jwks": {"url": idp.certs_url(realm), **extra}}
    )


async def _session(pol: JwtAuthPolicy, steps: Any) -> Any:
    ctx = AuthContext(Path("."))
    auth = JwtAuthenticator(pol, ctx)
    try:
        await auth.start()
        return await steps(auth)
    finally:
        await ctx.close()


def source_of(auth: JwtAuthenticator) -> UrlJwks:
    (provider,) = auth.providers.values()
    assert isinstance(provider.keys, UrlJwks)
    return provider.keys


def test_url_keys_are_fetched_once_and_cached(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        for _ in range(5):
            assert await auth.authenticate(request(sign(RSA1, claims(iss)))) is not None

    run(_session(url_policy(idp), steps))
    assert idp.realm().hits == 1


def test_a_new_kid_is_fetched_without_restart_and_the_old_one_keeps_working(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        assert await auth.authenticate(request(sign(RSA1, claims(iss)))) is not None
        idp.serve("mcp-realm", RSA1, RSA2)  # the IdP rotates: a new key beside the old
        assert await auth.authenticate(request(sign(RSA2, claims(iss)))) is not None
        assert await auth.authenticate(request(sign(RSA1, claims(iss)))) is not None

    run(_session(url_policy(idp), steps))
    assert idp.realm().hits == 2


def test_unknown_kid_refetches_are_rate_limited_and_single_flight(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        unknown = [sign(RSA2, claims(iss), kid=f"random-{i}") for i in range(20)]
        results = await asyncio.gather(
            *(auth.authenticate(request(t)) for t in unknown), return_exceptions=True
        )
        assert all(isinstance(r, Unauthenticated) for r in results), results
        assert idp.realm().hits == 2  # the start, then one refetch for twenty unknown kids
        for token in unknown[:3]:  # one after another, within the interval: no more fetches
            with pytest.raises(Unauthenticated):
                await auth.authenticate(request(token))
        assert idp.realm().hits == 2
        source_of(auth)._last_kid_fetch = time.monotonic() - source_of(auth).kid_refetch_seconds
        with pytest.raises(Unauthenticated):
            await auth.authenticate(request(unknown[0]))
        assert idp.realm().hits == 3  # the interval passed: one more

    run(_session(url_policy(idp), steps))


def test_idp_down_keeps_the_cached_keys_and_an_unknown_kid_is_401(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        idp.realm().down = True
        assert await source_of(auth).refresh() is False
        assert await auth.authenticate(request(sign(RSA1, claims(iss)))) is not None
        with pytest.raises(Unauthenticated, match="unknown"):
            await auth.authenticate(request(sign(RSA2, claims(iss))))

    run(_session(url_policy(idp), steps))


def test_a_slow_idp_holds_a_check_for_a_second_at_most(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        idp.realm().delay = 3.0
        started = time.monotonic()
        with pytest.raises(Unauthenticated, match="unknown"):
            await auth.authenticate(request(sign(RSA2, claims(iss))))
        assert time.monotonic() - started < 2.0
        assert await auth.authenticate(request(sign(RSA1, claims(iss)))) is not None

    run(_session(url_policy(idp), steps))


def test_no_keys_ever_loaded_is_503_not_500(idp: FakeKeycloak) -> None:
    idp.realm("empty").down = True
    token = sign(RSA1, claims(idp.issuer("empty")))
    with pytest.raises(Unavailable) as info:
        run(authenticate(url_policy(idp, "empty"), token))
    assert info.value.status == 503
    # Permissive routes serve anonymous callers: a token nobody can check is no identity.
    assert (
        run(authenticate(url_policy(idp, "empty").model_copy(update={"mode": "permissive"}), token)) is None
    )


def test_a_key_set_that_changes_mid_load_is_never_half_used(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        old = sign(RSA1, claims(iss))
        assert await auth.authenticate(request(old)) is not None
        idp.serve("mcp-realm", RSA2)
        idp.realm().truncate = True  # the response ends half way through the new set
        assert await source_of(auth).refresh() is False
        assert await auth.authenticate(request(old)) is not None
        idp.realm().truncate = False
        assert await source_of(auth).refresh() is True
        with pytest.raises(Unauthenticated):  # the token verified before: its key is gone now
            await auth.authenticate(request(old))

    run(_session(url_policy(idp), steps))


def test_the_cache_is_refreshed_in_the_background(idp: FakeKeycloak) -> None:
    iss = idp.issuer()

    async def steps(auth: JwtAuthenticator) -> None:
        idp.serve("mcp-realm", RSA2)  # RSA1 retired
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and source_of(auth).keyset.kids != ["rsa-2"]:  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
        with pytest.raises(Unauthenticated):
            await auth.authenticate(request(sign(RSA1, claims(iss))))

    run(_session(url_policy(idp, cacheDuration="1s"), steps))


def test_routes_naming_one_url_share_one_cache(idp: FakeKeycloak) -> None:
    async def steps() -> None:
        ctx = AuthContext(Path("."))
        a, b = (
            JwtAuthenticator(url_policy(idp), ctx),
            JwtAuthenticator(url_policy(idp).model_copy(update={"mode": "optional"}), ctx),
        )
        await a.start()
        await b.start()
        assert source_of(a) is source_of(b)
        await ctx.close()

    run(steps())
    assert idp.realm().hits == 1


# --- a file key set ------------------------------------------------------------------------------


def test_a_jwks_file_reloads_and_a_half_written_one_keeps_the_last_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FileJwks, "poll_seconds", 0.05)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(RSA1)))
    pol = JwtAuthPolicy.model_validate({"issuer": ISS, "jwks": {"file": "jwks.json"}})

    async def steps() -> None:
        ctx = AuthContext(tmp_path)
        auth = JwtAuthenticator(pol, ctx)
        await auth.start()
        assert await auth.authenticate(request(sign(RSA1, claims(ISS)))) is not None
        path.write_text(json.dumps(jwks(RSA2))[:40])  # a writer half way through
        await asyncio.sleep(0.3)
        assert await auth.authenticate(request(sign(RSA1, claims(ISS)))) is not None
        path.write_text(json.dumps(jwks(RSA2)))
        for _ in range(40):
            await asyncio.sleep(0.05)
            try:
                if await auth.authenticate(request(sign(RSA2, claims(ISS)))) is not None:
                    break
            except Unauthenticated:
                continue
        else:
            raise AssertionError("the new key set was not loaded")
        with pytest.raises(Unauthenticated):
            await auth.authenticate(request(sign(RSA1, claims(ISS))))
        await ctx.close()

    run(steps())


# --- the Keycloak deployment (docker compose) ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
KEYCLOAK = ROOT / "deploy" / "keycloak"


def test_the_sso_example_config_matches_the_shipped_realm(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from extproc.config.loader import load

    for name in ("KEYCLOAK_URL", "KEYCLOAK_ISSUER", "MOCK_HOST"):
        monkeypatch.delenv(name, raising=False)
    realm = json.loads((KEYCLOAK / "mcp-realm.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]["keycloak"]
    config = load(KEYCLOAK / "gateway-sso.yaml").config
    routes = [r for b in config.binds for listener in b.listeners for r in listener.routes]
    route = next(r for r in routes if r.name == "openai")
    jwt_policy = route.policies.jwt_auth
    assert jwt_policy is not None and jwt_policy.mode == "strict"
    # The issuer is Keycloak's frontend URL; the keys come from its in-network name.
    assert jwt_policy.issuer == f"{compose['environment']['KC_HOSTNAME']}/realms/{realm['realm']}"
    assert (
        jwt_policy.jwks.url == f"http://keycloak:8080/realms/{realm['realm']}/protocol/openid-connect/certs"
    )
    mappers = {m["protocolMapper"]: m["config"] for m in realm["clients"][0]["protocolMappers"]}
    assert jwt_policy.audiences == [mappers["oidc-audience-mapper"]["included.custom.audience"]]
    assert mappers["oidc-group-membership-mapper"]["claim.name"] == jwt_policy.claims.groups[0]
    assert mappers["oidc-group-membership-mapper"]["access.token.claim"] == "true"
    mount = "./deploy/keycloak/mcp-realm.json:/opt/keycloak/data/import/mcp-realm.json:ro"
    assert mount in compose["volumes"] and "--import-realm" in compose["command"]


def test_the_realm_has_the_seeds_client_and_users_in_groups() -> None:
    realm = json.loads((KEYCLOAK / "mcp-realm.json").read_text())
    (client,) = realm["clients"]
    assert client["clientId"] == "openweb-ui" and client["publicClient"] is False and client["secret"]
    assert client["directAccessGrantsEnabled"] and client["standardFlowEnabled"]
    assert "http://localhost:9999/oauth/oidc/callback" in client["redirectUris"]
    groups = {g["path"] for g in realm["groups"]}
    members = {u["username"]: u["groups"] for u in realm["users"]}
    assert members["alice"] == ["/engineering"] and members["bob"] == ["/marketing"]
    assert all(set(g) <= groups for g in members.values())


def test_get_keycloak_token_uses_the_password_grant(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs

    # The script is curl, as the seed's is (the README's examples need curl too).
    assert shutil.which("curl"), "deploy/keycloak/get-keycloak-token.sh needs curl on PATH"
    seen: dict[str, Any] = {}

    class Token(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["path"] = self.path
            seen["form"] = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            body = json.dumps({"access_token": "eyJ.test.token", "token_type": "Bearer"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=server.handle_request, daemon=True).start()
    env = {"PATH": "/usr/bin:/bin", "KEYCLOAK_URL": f"http://127.0.0.1:{server.server_port}"}
    out = subprocess.run(
        ["bash", str(KEYCLOAK / "get-keycloak-token.sh"), "bob", "bob"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    server.server_close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "eyJ.test.token"
    assert seen["path"] == "/realms/mcp-realm/protocol/openid-connect/token"
    form = {k: v[0] for k, v in seen["form"].items()}
    realm = json.loads((KEYCLOAK / "mcp-realm.json").read_text())
    assert form["grant_type"] == "password" and form["username"] == "bob"
    assert (form["client_id"], form["client_secret"]) == ("openweb-ui", realm["clients"][0]["secret"])
