"""Anthropic's Messages API and OpenAI's embeddings API through the real Envoy, against every provider.

The official ``anthropic`` SDK (what Claude Code uses) calls ``/v1/messages`` on one route per
provider and must get Anthropic objects back whatever the provider spoke; the official ``openai``
SDK calls ``/v1/embeddings`` on each provider that has embeddings. The mock answers in each
provider's native format, deterministically, so every assertion knows what the provider meant.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import (
    ANTHROPIC_KEY,
    AZURE_KEY,
    BEDROCK_KEY,
    CLIENT_KEY,
    GEMINI_KEY,
    OPENAI_KEY,
    VERTEX_TOKEN,
    Gateway,
    gateway_with_own_mock,
    provider_route,
)

PROJECT, REGION = "proj-e2e", "europe-west4"
VERTEX_BASE = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers"
PIXEL_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
    )
).decode()


@dataclass(frozen=True)
class Route:
    name: str
    spec: dict[str, Any]
    key: str
    label: str  # how the mock names itself in its reply text
    auth: tuple[str, str]  # the provider's credential header, as the mock must receive it


ROUTES = [
    Route("openai", {"openAI": {}}, OPENAI_KEY, "openai", ("authorization", f"Bearer {OPENAI_KEY}")),
    Route(
        "azure",
        {"azure": {"resourceName": "e2e", "deploymentName": "dep-e2e", "apiVersion": "2024-10-21"}},
        AZURE_KEY,
        "azure",
        ("api-key", AZURE_KEY),
    ),
    Route("anthropic", {"anthropic": {}}, ANTHROPIC_KEY, "anthropic", ("x-api-key", ANTHROPIC_KEY)),
    Route("gemini", {"gemini": {}}, GEMINI_KEY, "gemini", ("x-goog-api-key", GEMINI_KEY)),
    Route(
        "vertex",
        {"vertex": {"projectId": PROJECT, "region": REGION}},
        VERTEX_TOKEN,
        "vertex",
        ("authorization", f"Bearer {VERTEX_TOKEN}"),
    ),
    Route(
        "bedrock",
        {"bedrock": {"region": "us-west-2"}},
        BEDROCK_KEY,
        "bedrock",
        ("authorization", f"Bearer {BEDROCK_KEY}"),
    ),
]
BY_NAME = {r.name: r for r in ROUTES}

# Per route: the model a Messages client asks for, and the native chat path the provider must see.
CHAT = {
    "openai": ("gpt-4o", "/v1/chat/completions"),
    "azure": ("gpt-4o", "/openai/deployments/dep-e2e/chat/completions?api-version=2024-10-21"),
    "anthropic": ("claude-sonnet-4-6", "/v1/messages"),
    "gemini": ("gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent"),
    "vertex": ("gemini-2.5-pro", f"{VERTEX_BASE}/google/models/gemini-2.5-pro:generateContent"),
    "bedrock": (
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
    ),
}
VERTEX_CLAUDE = (
    "claude-sonnet-4@20250514",
    f"{VERTEX_BASE}/anthropic/models/claude-sonnet-4%4020250514:rawPredict",
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    def routes(host: str) -> list[dict]:
        return [provider_route(r.name, f"/{r.name}", r.spec, host, r.key) for r in ROUTES]

    with gateway_with_own_mock(tmp_path_factory.mktemp("client-apis"), routes) as gateway:
        yield gateway


def claude(gw: Gateway, route: str) -> anthropic.Anthropic:
    gw.mock.clear()
    return anthropic.Anthropic(base_url=f"{gw.url}/{route}", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def only_request(gw: Gateway) -> dict[str, Any]:
    (seen,) = gw.mock.requests()
    return seen


def hello(label: str, model: str, prompt: str, images: int = 0) -> str:
    text = f"Hello from mock {label} ({model}): {prompt}"
    if images:
        text += f" (saw {images} image{'' if images == 1 else 's'})"
    return text


MESSAGES_CASES = [pytest.param(name, *CHAT[name], id=name) for name in CHAT] + [
    pytest.param("vertex", *VERTEX_CLAUDE, id="vertex-claude")
]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}


# --- Messages API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "model", "native_path"), MESSAGES_CASES)
def test_messages_text(gw: Gateway, route: str, model: str, native_path: str) -> None:
    prompt = "Say hi to the gateway"
    message = claude(gw, route).messages.create(
        model=model,
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": prompt}],
    )
    r = BY_NAME[route]
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == hello(r.label, model, prompt)  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    seen = only_request(gw)
    assert seen["path"] == native_path
    name, value = r.auth
    assert seen["headers"][name] == value
    assert CLIENT_KEY not in json.dumps(seen["headers"])


@pytest.mark.parametrize(("route", "model", "native_path"), MESSAGES_CASES)
def test_messages_stream(gw: Gateway, route: str, model: str, native_path: str) -> None:
    prompt = "stream three little words please"
    client = claude(gw, route)
    with client.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    expected = hello(BY_NAME[route].label, model, prompt)
    assert text == expected
    assert final.content[0].text == expected  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert "stream" in only_request(gw)["path"].lower() or route in (
        "openai",
        "azure",
        "anthropic",
        "bedrock",
    )


@pytest.mark.parametrize(("route", "model", "native_path"), MESSAGES_CASES)
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
def test_messages_tool_use_round_trip(
    gw: Gateway, route: str, model: str, native_path: str, streaming: bool
) -> None:
    client = claude(gw, route)
    ask = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": ask,
    }
    if streaming:
        with client.messages.stream(**kwargs) as stream:
            message = stream.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.id
    assert set(use.input) == {"city", "unit"}  # type: ignore[arg-type]
    assert use.input["unit"] in ("c", "f")  # type: ignore[index]
    # The tool's result goes back; the provider answers in text.
    follow = client.messages.create(
        model=model,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn"
    assert "18C, sunny" in follow.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(("route", "model", "native_path"), MESSAGES_CASES)
def test_messages_image(gw: Gateway, route: str, model: str, native_path: str) -> None:
    prompt = "What is in this picture?"
    message = claude(gw, route).messages.create(
        model=model,
        max_tokens=256,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL_PNG},
                    },
                    {"type": "text", "text": prompt},
                ],
            }
        ],
    )
    assert message.content[0].text == hello(BY_NAME[route].label, model, prompt, images=1)  # type: ignore[union-attr]
    assert PIXEL_PNG in only_request(gw)["body"]  # the image reached the provider, in its own part


@pytest.mark.parametrize(
    ("route", "status", "error_class", "error_type"),
    [
        ("openai", 429, anthropic.RateLimitError, "rate_limit_error"),
        ("gemini", 429, anthropic.RateLimitError, "rate_limit_error"),
        ("bedrock", 429, anthropic.RateLimitError, "rate_limit_error"),
        ("anthropic", 529, anthropic.InternalServerError, "overloaded_error"),
        ("openai", 400, anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_messages_provider_errors_in_anthropic_shape(
    gw: Gateway, route: str, status: int, error_class: type[Exception], error_type: str
) -> None:
    model = CHAT[route][0]
    with pytest.raises(error_class) as info:
        claude(gw, route).messages.create(
            model=model,
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-status": str(status)},
        )
    err = info.value
    assert err.status_code == status  # type: ignore[attr-defined]
    body = err.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["error"]["message"]


@pytest.mark.parametrize("route", ["openai", "gemini", "bedrock"])
def test_messages_mid_stream_error_is_an_error_event(gw: Gateway, route: str) -> None:
    model = CHAT[route][0]
    client = claude(gw, route)
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model=model,
            max_tokens=256,
            messages=[{"role": "user", "content": "a fairly long answer would be split in many events"}],
            extra_headers={"x-mock-stream-error-after": "2"},
        ) as stream,
    ):
        for _ in stream:
            pass


# --- embeddings -----------------------------------------------------------------------------------

EMBEDDINGS = [
    pytest.param("openai", "text-embedding-3-small", "/v1/embeddings", id="openai"),
    pytest.param(
        "azure",
        "text-embedding-3-small",
        "/openai/deployments/dep-e2e/embeddings?api-version=2024-10-21",
        id="azure",
    ),
    pytest.param(
        "gemini",
        "gemini-embedding-001",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        id="gemini",
    ),
    pytest.param(
        "vertex", "text-embedding-005", f"{VERTEX_BASE}/google/models/text-embedding-005:predict", id="vertex"
    ),
    pytest.param(
        "bedrock", "cohere.embed-english-v3", "/model/cohere.embed-english-v3/invoke", id="bedrock-cohere"
    ),
]


def flat(result: Any) -> list[float]:
    return [x for d in result.data for x in d.embedding]


def openai_client(gw: Gateway, route: str) -> openai.OpenAI:
    gw.mock.clear()
    return openai.OpenAI(base_url=f"{gw.url}/{route}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.mark.parametrize(("route", "model", "native_path"), EMBEDDINGS)
def test_embeddings(gw: Gateway, route: str, model: str, native_path: str) -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    # The SDK asks for base64 by default and decodes it: both encodings are exercised.
    as_base64 = openai_client(gw, route).embeddings.create(model=model, input=texts)
    seen = only_request(gw)
    assert seen["path"] == native_path
    name, value = BY_NAME[route].auth
    assert seen["headers"][name] == value
    as_floats = openai_client(gw, route).embeddings.create(model=model, input=texts, encoding_format="float")
    for result in (as_base64, as_floats):
        assert [d.index for d in result.data] == [0, 1]
        assert all(len(d.embedding) > 0 for d in result.data)
        assert result.data[0].embedding != result.data[1].embedding
    assert flat(as_floats) == pytest.approx(flat(as_base64), rel=1e-6)
    # The mock's vectors depend on the text alone: every provider must agree with OpenAI's.
    reference = openai_client(gw, "openai").embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert flat(as_floats) == pytest.approx(flat(reference), rel=1e-6)


def test_embeddings_single_input_titan(gw: Gateway) -> None:
    result = openai_client(gw, "bedrock").embeddings.create(
        model="amazon.titan-embed-text-v2:0", input="one text", encoding_format="float"
    )
    assert len(result.data) == 1 and len(result.data[0].embedding) > 0
    assert result.usage.prompt_tokens > 0
    assert only_request(gw)["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"


def test_embeddings_unsupported_provider_is_a_clear_400(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(gw, "anthropic").embeddings.create(model="claude-sonnet-4-5", input="x")
    assert "embedding" in info.value.message.lower()
    assert gw.mock.requests() == []  # nothing reached the provider


def test_embeddings_provider_error_keeps_status(gw: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(gw, "gemini").embeddings.create(
            model="gemini-embedding-001", input="x", extra_headers={"x-mock-status": "429"}
        )
    assert info.value.status_code == 429


# --- gzip-encoded provider answers ----------------------------------------------------------------

GZIP = {"x-mock-gzip": "1"}


@pytest.mark.parametrize("route", ["anthropic", "gemini", "bedrock"])
def test_gzip_answer_is_translated(gw: Gateway, route: str) -> None:
    model = CHAT[route][0]
    done = openai_client(gw, route).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "zip it"}], extra_headers=GZIP
    )
    assert done.choices[0].message.content == hello(BY_NAME[route].label, model, "zip it")
    assert done.usage is not None and done.usage.completion_tokens > 0


@pytest.mark.parametrize("route", ["anthropic", "gemini", "bedrock"])
@pytest.mark.parametrize("chunk_bytes", ["0", "3"])
def test_gzip_stream_is_translated_as_it_arrives(gw: Gateway, route: str, chunk_bytes: str) -> None:
    model = CHAT[route][0]
    stream = openai_client(gw, route).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "zip the stream"}],
        stream=True,
        extra_headers={**GZIP, "x-mock-chunk-bytes": chunk_bytes},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == hello(BY_NAME[route].label, model, "zip the stream")


def test_gzip_error_is_translated(gw: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        openai_client(gw, "gemini").chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={**GZIP, "x-mock-status": "429"},
        )
    assert info.value.status_code == 429 and info.value.message


def test_gzip_stream_for_a_messages_client(gw: Gateway) -> None:
    client = claude(gw, "gemini")
    with client.messages.stream(
        model="gemini-2.5-flash",
        max_tokens=128,
        messages=[{"role": "user", "content": "zip for claude"}],
        extra_headers=GZIP,
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == hello("gemini", "gemini-2.5-flash", "zip for claude")


# --- unknown models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "status", "error_class"),
    [
        ("openai", 404, openai.NotFoundError),
        ("anthropic", 404, openai.NotFoundError),
        ("gemini", 404, openai.NotFoundError),
        ("vertex", 404, openai.NotFoundError),
        (
            "bedrock",
            400,
            openai.BadRequestError,
        ),  # Bedrock answers an unknown model id with a ValidationException
    ],
)
def test_unknown_model_gets_the_providers_status_and_message(
    gw: Gateway, route: str, status: int, error_class: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error_class) as info:
        openai_client(gw, route).chat.completions.create(
            model="unknown-model-x", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == status
    assert "unknown-model-x" in info.value.message or "model identifier" in info.value.message


def test_unknown_model_for_a_messages_client(gw: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude(gw, "gemini").messages.create(
            model="unknown-model-x", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "unknown-model-x" in info.value.body["error"]["message"]  # type: ignore[index]


# --- Vertex partner models (OpenAI-compatible endpoint) ----------------------------------------------

VERTEX_MAAS = "meta/llama-4-maverick-17b-128e-instruct-maas"


def test_vertex_partner_model_uses_the_openai_compatible_endpoint(gw: Gateway) -> None:
    done = openai_client(gw, "vertex").chat.completions.create(
        model=VERTEX_MAAS, messages=[{"role": "user", "content": "hi llama"}]
    )
    assert done.choices[0].message.content.endswith("hi llama")  # type: ignore[union-attr]
    seen = only_request(gw)
    assert seen["path"] == f"/v1/projects/{PROJECT}/locations/{REGION}/endpoints/openapi/chat/completions"
    assert json.loads(seen["body"])["model"] == VERTEX_MAAS
    assert seen["headers"]["authorization"] == f"Bearer {VERTEX_TOKEN}"


def test_vertex_partner_model_for_a_messages_client(gw: Gateway) -> None:
    message = claude(gw, "vertex").messages.create(
        model=VERTEX_MAAS, max_tokens=64, messages=[{"role": "user", "content": "hi llama"}]
    )
    assert message.content[0].text.endswith("hi llama")  # type: ignore[union-attr]
    assert only_request(gw)["path"].endswith("/endpoints/openapi/chat/completions")
