"""credentials.credential_headers: the same headers as egress's, fetched off the event loop.

Real botocore ``RefreshableCredentials`` (with a refresh function the test controls)
and real google-auth service-account credentials (a generated key whose token_uri is
a local OAuth endpoint) stand in for STS and Google.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.credentials
import pytest
import yaml
from botocore.awsrequest import AWSRequest
from botocore.credentials import RefreshableCredentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc import aws_auth, credentials, gateway, gcp_auth
from extproc.config.loader import parse_text
from extproc.errors import GatewayError
from extproc.refresh import Fetched, Refreshing

BODY = b'{"messages": []}'
PATH = "/model/m/converse"


def upstream(provider: dict, key: str | None = None) -> gateway.Upstream:
    route: dict = {
        "name": "r",
        "backends": [{"ai": {"name": "p", "provider": provider, "hostOverride": "127.0.0.1:8080"}}],
    }
    if key is not None:
        route["policies"] = {"backendAuth": {"key": key}}
    config = {"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]}
    (up,) = gateway.build(parse_text(yaml.safe_dump(config)).config).upstreams_by_id.values()
    return up


BEDROCK = upstream({"bedrock": {"region": "eu-west-1"}})
VERTEX = upstream({"vertex": {"projectId": "proj", "region": "us-east5"}})


def headers(up: gateway.Upstream = BEDROCK) -> dict[str, str]:
    return asyncio.run(credentials.credential_headers(up, "POST", PATH, BODY))


async def ticking(work: Awaitable[Any]) -> tuple[Any, list[float]]:
    """``work``'s result, and the gaps between the ticks of a coroutine running beside it."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        return await work, gaps
    finally:
        done.set()
        await ticker


def settle(cache: Refreshing[Any]) -> None:
    """Wait for a background refresh, if one is still running."""
    if (inflight := cache.in_flight()) is not None:
        inflight.result(timeout=5)


def access_key(h: dict[str, str]) -> str:
    return h["authorization"].split("Credential=")[1].split("/")[0]


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    credentials.reset()
    yield
    credentials.reset()


# --- AWS: botocore RefreshableCredentials refreshed by a function the test controls ---


class Clock:
    """A settable clock for both botocore (datetime) and the cache (seconds)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, datetime.UTC)


class STS:
    """A refresh function: numbered access keys valid for an hour, counted, optionally slow or failing."""

    def __init__(self, clock: Clock | None = None, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay
        self.calls = 0
        self.fail = False

    def _now(self) -> datetime.datetime:
        return self.clock.utc() if self.clock else datetime.datetime.now(datetime.UTC)

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("STS is unavailable")
        expiry = self._now() + datetime.timedelta(hours=1)
        return {
            "access_key": f"AKID{self.calls:04d}",
            "secret_key": "secret",
            "token": "session",
            "expiry_time": expiry.isoformat(),
        }

    def credentials(self, expires_in: float) -> RefreshableCredentials:
        kwargs = {"time_fetcher": self.clock.utc} if self.clock else {}
        return RefreshableCredentials(
            "AKID0000",
            "secret",
            "session",
            self._now() + datetime.timedelta(seconds=expires_in),
            self,
            "test-sts",
            **kwargs,
        )


def use_aws(
    monkeypatch: pytest.MonkeyPatch, resolve: Callable[[], Any], **kwargs: Any
) -> aws_auth.AWSCredentials:
    source = aws_auth.AWSCredentials(resolve, **kwargs)
    monkeypatch.setattr(aws_auth, "DEFAULT", source)
    return source


def test_a_slow_aws_refresh_does_not_block_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    sts = STS(delay=2.0)
    expired = sts.credentials(expires_in=-1)  # botocore must refresh before signing: 2 s
    use_aws(monkeypatch, lambda: expired)
    started = time.monotonic()
    h, gaps = asyncio.run(ticking(credentials.credential_headers(BEDROCK, "POST", PATH, BODY)))
    assert time.monotonic() - started >= 1.9
    assert access_key(h) == "AKID0001"
    assert len(gaps) >= 40 and max(gaps) < 0.5, f"the event loop stalled: {max(gaps):.2f}s"


def test_twenty_concurrent_requests_cause_one_aws_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    sts = STS(delay=0.3)
    resolved: list[int] = []

    def resolve() -> RefreshableCredentials:
        resolved.append(1)
        return sts.credentials(expires_in=-1)

    use_aws(monkeypatch, resolve)

    async def twenty() -> list[dict[str, str]]:
        return await asyncio.gather(
            *(credentials.credential_headers(BEDROCK, "POST", PATH, BODY) for _ in range(20))
        )

    answers = asyncio.run(twenty())
    assert (len(resolved), sts.calls) == (1, 1)
    assert {access_key(h) for h in answers} == {"AKID0001"}


def test_no_aws_credentials_is_a_clear_error_retried_after_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found: list[Any] = [None]  # the chain finds nothing at first
    calls: list[int] = []

    def resolve() -> Any:
        calls.append(1)
        return found[0]

    use_aws(monkeypatch, resolve, min_backoff=0.3)
    for _ in range(2):  # the second call is inside the backoff: the chain is not walked again
        with pytest.raises(GatewayError) as err:
            headers()
        assert (err.value.status, err.value.code) == (500, "gateway_missing_credentials")
        assert err.value.message == (
            "the gateway has no AWS credentials for provider 'p' (set backendAuth.key to a Bedrock API key, "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    assert len(calls) == 1
    found[0] = STS().credentials(expires_in=3600)
    time.sleep(0.35)
    assert access_key(headers()) == "AKID0000"
    assert len(calls) == 2


def test_a_failed_aws_refresh_names_the_cause_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    sts = STS()
    sts.fail = True
    use_aws(monkeypatch, lambda: sts.credentials(expires_in=-1), min_backoff=0.2)
    with pytest.raises(GatewayError) as err:
        headers()
    assert "could not get AWS credentials for provider 'p' (STS is unavailable)" in err.value.message
    sts.fail = False
    time.sleep(0.25)
    assert access_key(headers()) == "AKID0002"  # the first refresh failed; the retry's is the second


def test_expiring_aws_credentials_are_reread_ahead_and_when_due(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sts = STS(clock)
    source = use_aws(monkeypatch, lambda: sts.credentials(expires_in=3600), clock=clock)
    assert access_key(headers()) == "AKID0000"
    clock.now += 2701  # inside botocore's advisory window (15 min): refresh in the background
    assert access_key(headers()) == "AKID0000"  # served at once with the old credentials
    settle(source.cache)
    assert access_key(headers()) == "AKID0001"
    clock.now += 3600 - 599  # inside the mandatory window (10 min) of the new ones: callers wait
    assert access_key(headers()) == "AKID0002"
    assert sts.calls == 2


def test_a_failed_advisory_refresh_backs_off_instead_of_refetching_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    sts = STS(clock)
    source = use_aws(monkeypatch, lambda: sts.credentials(expires_in=3600), clock=clock)
    headers()
    clock.now += 2701
    sts.fail = True  # botocore logs it and keeps the old credentials
    for _ in range(5):
        assert access_key(headers()) == "AKID0000"
        settle(source.cache)
    assert sts.calls == 1
    sts.fail = False
    clock.now += 1.0  # the backoff has passed
    headers()
    settle(source.cache)
    assert access_key(headers()) == "AKID0002"


def test_sigv4_headers_are_botocores_signature_of_the_exact_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIDSTATIC",
        "AWS_SECRET_ACCESS_KEY": "static-secret",
        "AWS_SESSION_TOKEN": "static-token",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    fixed = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    # Signed independently, the way botocore signs any request to this URL.
    request = AWSRequest(
        method="POST",
        url=f"{'https' if BEDROCK.tls else 'http'}://{BEDROCK.authority}{PATH}",
        data=BODY,
        headers={"content-type": "application/json"},
    )
    creds = botocore.credentials.Credentials("AKIDSTATIC", "static-secret", "static-token")
    botocore.auth.SigV4Auth(creds, "bedrock", "eu-west-1").add_auth(request)
    expected = {k.lower(): v for k, v in request.headers.items() if k.lower() != "content-type"}
    got = headers()
    assert got == expected
    assert got["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDSTATIC/20250102/eu-west-1/bedrock/"
    )
    assert got["x-amz-security-token"] == "static-token"


_NO_KEY = "the gateway has no credentials for provider 'p': set backendAuth.key"


@pytest.mark.parametrize(
    ("provider", "key", "env", "expected"),
    [
        ({"openAI": {}}, "$OPENAI_TEST_KEY", {"OPENAI_TEST_KEY": "sk-1"}, {"authorization": "Bearer sk-1"}),
        (
            {"anthropic": {}},
            "sk-ant-literal",
            {},
            {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-literal"},
        ),
        ({"anthropic": {}}, None, {}, (500, "gateway_missing_credentials", _NO_KEY)),
        (
            {"gemini": {}},
            "$UNSET_TEST_KEY",
            {},
            (
                500,
                "gateway_missing_credentials",
                "the gateway has no credentials for provider 'p': "
                "environment variable UNSET_TEST_KEY is not set",
            ),
        ),
        (
            {"bedrock": {"region": "us-east-1"}},
            "bedrock-api-key",
            {},
            {"authorization": "Bearer bedrock-api-key"},
        ),
        ({"vertex": {"projectId": "p"}}, "ya29.literal", {}, {"authorization": "Bearer ya29.literal"}),
        (
            {"azure": {"resourceName": "r", "deploymentName": "d"}},
            None,
            {},
            (500, "gateway_missing_credentials", _NO_KEY),
        ),
    ],
    ids=[
        "openai-env",
        "anthropic-key",
        "anthropic-none",
        "missing-env",
        "bedrock-key",
        "vertex-key",
        "azure-none",
    ],
)
def test_key_headers_and_errors(
    monkeypatch: pytest.MonkeyPatch, provider: dict, key: str | None, env: dict[str, str], expected: object
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("UNSET_TEST_KEY", raising=False)
    up = upstream(provider, key)
    try:
        got: object = headers(up)
    except GatewayError as exc:
        got = (exc.status, exc.code, exc.message)
    assert got == expected


# --- Google: service-account credentials against a local OAuth token endpoint ---


class TokenEndpoint:
    """POST /token: numbered access tokens; ``script`` sets each answer's delay and status."""

    def __init__(self) -> None:
        self.hits = 0
        self.script: list[tuple[float, int]] = []  # (delay, status) per exchange; then (0, 200)
        self.expires_in = 3600
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                endpoint.hits += 1
                delay, status = endpoint.script.pop(0) if endpoint.script else (0.0, 200)
                time.sleep(delay)
                if status == 200:
                    body = {"access_token": f"ya29.test-{endpoint.hits}", "expires_in": endpoint.expires_in}
                else:
                    body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"


@pytest.fixture(scope="module")
def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def google(tmp_path: Path, private_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenEndpoint]:
    """Application Default Credentials (a service-account key file) whose token_uri is a local endpoint."""
    endpoint = TokenEndpoint()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "proj",
                "private_key_id": "k1",
                "private_key": private_key,
                "client_email": "gw@proj.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": endpoint.url,
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    yield endpoint
    endpoint.server.shutdown()


def use_google(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> gcp_auth.GoogleTokens:
    tokens = gcp_auth.GoogleTokens(**kwargs)
    monkeypatch.setattr(gcp_auth, "DEFAULT", tokens)
    return tokens


def test_a_slow_google_token_exchange_does_not_block_the_event_loop(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_google(monkeypatch)
    google.script = [(2.0, 200)]
    h, gaps = asyncio.run(ticking(credentials.credential_headers(VERTEX, "POST", "/v1/x", BODY)))
    assert h == {"authorization": "Bearer ya29.test-1"}
    assert len(gaps) >= 40 and max(gaps) < 0.5, f"the event loop stalled: {max(gaps):.2f}s"


def test_twenty_concurrent_requests_cause_one_token_exchange(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_google(monkeypatch)
    google.script = [(0.3, 200)]

    async def twenty() -> list[dict[str, str]]:
        return await asyncio.gather(
            *(credentials.credential_headers(VERTEX, "POST", "/v1/x", BODY) for _ in range(20))
        )

    assert {h["authorization"] for h in asyncio.run(twenty())} == {"Bearer ya29.test-1"}
    assert google.hits == 1


def test_a_refused_token_exchange_is_a_clear_error_retried_after_the_backoff(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_google(monkeypatch, min_backoff=0.3)
    google.script = [(0.0, 400)]
    for _ in range(2):
        with pytest.raises(GatewayError) as err:
            headers(VERTEX)
        assert (err.value.status, err.value.code) == (500, "gateway_missing_credentials")
        assert err.value.message.startswith(
            "the gateway has no Google credentials for provider 'p' (invalid_grant: Invalid JWT Signature.)"
        )
    assert google.hits == 1  # inside the backoff the endpoint is not asked again
    time.sleep(0.35)
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-2"}


def test_an_expiring_google_token_is_renewed_in_the_background(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = use_google(monkeypatch, refresh_ahead=3600 - 0.5)  # renew half a second after each exchange
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-1"}
    google.script = [(1.0, 200)]  # the renewal is slow
    time.sleep(0.6)
    started = time.monotonic()
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-1"}  # not kept waiting for it
    assert time.monotonic() - started < 0.5
    settle(tokens.cache)
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-2"}
    assert google.hits == 2


def test_an_expired_google_token_is_waited_for(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_google(monkeypatch, refresh_ahead=3600 - 0.3, expiry_margin=3600 - 0.3)  # unusable after 0.3 s
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-1"}
    time.sleep(0.4)
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-2"}


def test_missing_application_default_credentials_are_looked_for_again(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    use_google(monkeypatch, min_backoff=0.2)
    with pytest.raises(GatewayError) as err:
        headers(VERTEX)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err.value.message
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", real)  # the key file is mounted later
    time.sleep(0.25)
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-1"}


def test_the_sync_access_token_shares_the_cache(
    google: TokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_google(monkeypatch)
    assert gcp_auth.access_token() == "ya29.test-1"
    assert headers(VERTEX) == {"authorization": "Bearer ya29.test-1"}
    assert google.hits == 1


# --- the backoff itself ---


def test_the_backoff_doubles_from_one_second_and_is_capped_at_thirty() -> None:
    clock = Clock()
    start = clock.now
    tried: list[float] = []

    def fetch() -> Fetched[str]:
        tried.append(clock.now - start)
        raise RuntimeError("down")

    cache: Refreshing[str] = Refreshing("test", fetch, clock=clock)
    while clock.now - start < 100:
        with pytest.raises(RuntimeError):
            cache.get_blocking()
        clock.now += 0.5
    assert tried == [0, 1, 3, 7, 15, 31, 61, 91]
