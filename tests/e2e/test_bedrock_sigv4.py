"""Bedrock without a configured key: SigV4 from the standard AWS credential chain, signed after translation.

The gateway's extproc gets AWS credentials from its environment (the first link of
botocore's chain). The test recomputes the signature from what the provider actually
received (method, path, the signed headers, the body) with the same secret: a match
proves the request was signed after translation and that Envoy changed nothing signed
on the way (path, host, body).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.e2e.conftest import CLIENT_KEY, Gateway, Mock, launch, listener_config, provider_route

ACCESS_KEY, SECRET_KEY, SESSION_TOKEN = (
    "AKIDGATEWAYTEST0001",
    "gateway-test-secret-key",
    "gateway-session-token",
)
REGION = "eu-west-1"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture
def sigv4_gateway(
    tmp_path: Path, mocks: tuple[Mock, Mock, Mock], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    mock = mocks[0]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    bedrock = {"bedrock": {"region": REGION}}
    route = provider_route("bedrock", "/bedrock", bedrock, f"127.0.0.1:{mock.port}", None)
    gw = launch(tmp_path, listener_config([route]), mock)
    yield gw
    gw.stack.stop()


def expected_signature(seen: dict[str, Any]) -> tuple[str, str]:
    """(signature the gateway sent, signature recomputed from what the provider received)."""
    headers = seen["headers"]
    auth = headers["authorization"]
    signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")  # type: ignore[union-attr]
    sent = re.search(r"Signature=([0-9a-f]+)", auth).group(1)  # type: ignore[union-attr]
    request = AWSRequest(
        method=seen["method"],
        url=f"http://{headers['host']}{seen['path']}",
        data=seen["body"].encode(),
        headers={name: headers[name] for name in signed},
    )
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    request.context["timestamp"] = headers["x-amz-date"]
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    return sent, signer.signature(string_to_sign, request)


@pytest.mark.parametrize("stream", [False, True], ids=["converse", "converse-stream"])
def test_bedrock_requests_are_sigv4_signed_after_translation(sigv4_gateway: Gateway, stream: bool) -> None:
    sigv4_gateway.mock.clear()
    client = openai.OpenAI(base_url=f"{sigv4_gateway.url}/bedrock/v1", api_key=CLIENT_KEY, max_retries=0)
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "sign me"}], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        done = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "sign me"}])
        text = done.choices[0].message.content or ""
    assert text.endswith("sign me")
    (seen,) = sigv4_gateway.mock.requests()
    verb = "converse-stream" if stream else "converse"
    assert seen["path"] == f"/model/{MODEL.replace(':', '%3A')}/{verb}"
    assert seen["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert f"/{REGION}/bedrock/aws4_request" in seen["headers"]["authorization"]
    assert seen["headers"]["x-amz-security-token"] == SESSION_TOKEN
    assert "messages" in json.loads(seen["body"])  # the Converse body, not the client's OpenAI body
    sent, recomputed = expected_signature(seen)
    assert sent == recomputed
    assert CLIENT_KEY not in json.dumps(seen["headers"])
