"""OpenAI chat.completions through the real Envoy against every provider's wire format.

The official ``openai`` SDK talks to one route per provider (OpenAI, Azure, Anthropic, Gemini,
Vertex Gemini, Vertex Claude, Bedrock); the mock provider answers each in its own native format,
deterministically (see extproc/mock/conversation.py), so every assertion below knows exactly what
the provider meant to say and checks what the SDK objects contain, and what the provider received.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest

from extproc.mock.server import DEFAULT_FIXTURE_DIR as FIXTURE_DIR
from extproc.translate import anthropic as tr_anthropic
from extproc.translate import bedrock as tr_bedrock
from extproc.translate import gemini as tr_gemini
from extproc.translate import openai as tr_openai
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
AZURE_DEPLOYMENT, AZURE_API_VERSION = "gpt4o-prod", "2024-10-21"
VERTEX_BASE = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers"


@dataclass(frozen=True)
class Provider:
    name: str  # route prefix and test id
    family: str  # wire format: openai, anthropic, gemini, bedrock
    spec: dict[str, Any]  # the config's provider block
    model: str  # what the client asks for
    label: str  # how the mock names itself in its reply text
    key: str
    auth: tuple[str, str]  # the provider's own credential header and value
    path: str  # native path, not streaming (raw, as the mock saw it)
    stream_path: str

    @property
    def prefix(self) -> str:
        return f"/{self.name}"


PROVIDERS = [
    Provider(
        "openai",
        "openai",
        {"openAI": {}},
        "gpt-4o",
        "openai",
        OPENAI_KEY,
        ("authorization", f"Bearer {OPENAI_KEY}"),
        "/v1/chat/completions",
        "/v1/chat/completions",
    ),
    Provider(
        "azure",
        "openai",
        {
            "azure": {
                "resourceName": "e2e-resource",
                "deploymentName": AZURE_DEPLOYMENT,
                "apiVersion": AZURE_API_VERSION,
            }
        },
        "gpt-4o",
        "azure",
        AZURE_KEY,
        ("api-key", AZURE_KEY),
        f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions?api-version={AZURE_API_VERSION}",
        f"/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions?api-version={AZURE_API_VERSION}",
    ),
    Provider(
        "anthropic",
        "anthropic",
        {"anthropic": {}},
        "claude-3-5-haiku-latest",
        "anthropic",
        ANTHROPIC_KEY,
        ("x-api-key", ANTHROPIC_KEY),
        "/v1/messages",
        "/v1/messages",
    ),
    Provider(
        "gemini",
        "gemini",
        {"gemini": {}},
        "gemini-2.5-flash",
        "gemini",
        GEMINI_KEY,
        ("x-goog-api-key", GEMINI_KEY),
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    ),
    Provider(
        "vertex-gemini",
        "gemini",
        {"vertex": {"projectId": PROJECT, "region": REGION}},
        "gemini-2.5-pro",
        "vertex",
        VERTEX_TOKEN,
        ("authorization", f"Bearer {VERTEX_TOKEN}"),
        f"{VERTEX_BASE}/google/models/gemini-2.5-pro:generateContent",
        f"{VERTEX_BASE}/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
    ),
    Provider(
        "vertex-claude",
        "anthropic",
        {"vertex": {"projectId": PROJECT, "region": REGION}},
        "claude-sonnet-4@20250514",
        "vertex",
        VERTEX_TOKEN,
        ("authorization", f"Bearer {VERTEX_TOKEN}"),
        f"{VERTEX_BASE}/anthropic/models/claude-sonnet-4%4020250514:rawPredict",
        f"{VERTEX_BASE}/anthropic/models/claude-sonnet-4%4020250514:streamRawPredict",
    ),
    Provider(
        "bedrock",
        "bedrock",
        {"bedrock": {"region": "us-west-2"}},
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "bedrock",
        BEDROCK_KEY,
        ("authorization", f"Bearer {BEDROCK_KEY}"),
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
    ),
]
BY_NAME = {p.name: p for p in PROVIDERS}


def providers(*names: str, marks: dict[str, Any] | None = None) -> list[Any]:
    """``pytest.param`` per provider (all when no names), with optional per-provider marks."""
    chosen = [BY_NAME[n] for n in names] if names else PROVIDERS
    return [pytest.param(p, id=p.name, marks=(marks or {}).get(p.name, ())) for p in chosen]


# --- the gateway ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of this module's own: one route per provider, all answered by a private mock."""

    def routes(host: str) -> list[dict]:
        return [provider_route(p.name, p.prefix, p.spec, host, p.key) for p in PROVIDERS]

    with gateway_with_own_mock(tmp_path_factory.mktemp("providers"), routes) as gateway:
        yield gateway


@pytest.fixture
def sdk(gw: Gateway) -> Iterator[Any]:
    """``sdk(provider)``: an OpenAI client on that provider's route; the mock's log starts empty."""
    clients: list[openai.OpenAI] = []

    def make(p: Provider) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{gw.url}{p.prefix}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20
        )
        clients.append(client)
        return client

    gw.mock.clear()
    yield make
    for client in clients:
        client.close()


# --- what the mock meant to say, and what it received -----------------------------------------------


def hello(p: Provider, prompt: str, images: int = 0) -> str:
    """The mock's text reply to ``prompt`` (extproc/mock/conversation.py: reply_text)."""
    text = f"Hello from mock {p.label} ({p.model}): {prompt}"
    if images:
        text += f" (saw {images} image{'' if images == 1 else 's'})"
    return text


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


@dataclass
class Native:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def received(gw: Gateway, count: int = 1) -> list[Native]:
    seen = gw.mock.requests()
    assert len(seen) == count, [r["path"] for r in seen]
    return [Native(r["path"], r["headers"], json.loads(r["body"])) for r in seen]


def native(gw: Gateway) -> Native:
    return received(gw)[0]


def native_messages(p: Provider, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation turns of a native request body."""
    return body["contents"] if p.family == "gemini" else body["messages"]


def native_system(p: Provider, body: dict[str, Any]) -> list[str]:
    """The system texts of a native request body."""
    if p.family == "openai":
        return [m["content"] for m in body["messages"] if m["role"] in ("system", "developer")]
    if p.family == "anthropic":
        system = body["system"]
        return [system] if isinstance(system, str) else [b["text"] for b in system]
    if p.family == "gemini":
        return [part["text"] for part in body["systemInstruction"]["parts"]]
    return [block["text"] for block in body["system"]]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assert_usage(usage: Any, prompt: int, completion: int) -> None:
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    assert prompt > 0 and completion > 0


@dataclass
class Streamed:
    chunks: list[Any]
    text: str = ""
    roles: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: Any = None


def collect(stream: Any) -> Streamed:
    """Reassemble a chat.completion.chunk stream the way SDK users do."""
    out = Streamed(chunks=list(stream))
    ids = {chunk.id for chunk in out.chunks}
    assert len(ids) == 1, ids  # every chunk of one completion shares its id
    for position, chunk in enumerate(out.chunks):
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert position == len(out.chunks) - 1, "usage must come in the last chunk"
            assert chunk.choices == []
            out.usage = chunk.usage
        for choice in chunk.choices:
            assert choice.index == 0
            delta = choice.delta
            if delta.role:
                out.roles.append(delta.role)
            out.text += delta.content or ""
            if choice.finish_reason:
                out.finish_reasons.append(choice.finish_reason)
            for tc in delta.tool_calls or ():
                slot = out.calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    assert slot["id"] is None, "a tool call's id comes once"
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
    return out


def stream_chat(client: openai.OpenAI, p: Provider, **kwargs: Any) -> Streamed:
    kwargs.setdefault("stream_options", {"include_usage": True})
    return collect(client.chat.completions.create(model=p.model, stream=True, **kwargs))


# --- plain text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", providers())
def test_text_completion(gw: Gateway, sdk: Any, p: Provider) -> None:
    prompt = "What is the capital of France?"
    completion = sdk(p).chat.completions.create(model=p.model, messages=[user(prompt)])
    assert completion.object == "chat.completion"
    assert completion.id
    assert completion.model == p.model
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == hello(p, prompt)
    assert not choice.message.tool_calls
    assert_usage(completion.usage, words(prompt), words(hello(p, prompt)))


@pytest.mark.parametrize("p", providers())
def test_provider_receives_its_native_request(gw: Gateway, sdk: Any, p: Provider) -> None:
    sdk(p).chat.completions.create(model=p.model, messages=[user("native please")])
    got = native(gw)
    assert got.path == p.path
    header, value = p.auth
    assert got.headers.get(header) == value
    flat = json.dumps(got.headers)
    assert CLIENT_KEY not in flat  # the client's own key never reaches a provider
    for other in {q.key for q in PROVIDERS} - {p.key}:
        assert other not in flat
    if p.family == "openai":
        assert got.body["model"] == p.model
        assert got.body["messages"] == [{"role": "user", "content": "native please"}]
    elif p.name == "anthropic":
        assert got.body["model"] == p.model
        assert got.headers.get("anthropic-version") == "2023-06-01"
        assert got.body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "native please"}]}
        ]
        assert isinstance(got.body["max_tokens"], int)
    elif p.name == "vertex-claude":
        # Claude on Vertex: the model is in the URL, the API version in the body.
        assert "model" not in got.body
        assert got.body["anthropic_version"] == "vertex-2023-10-16"
        assert unquote(got.path).endswith(f"/models/{p.model}:rawPredict")
    elif p.family == "gemini":
        assert got.body["contents"] == [{"role": "user", "parts": [{"text": "native please"}]}]
        assert f"/models/{p.model}:" in got.path
    else:
        assert unquote(got.path) == f"/model/{p.model}/converse"
        assert got.body["messages"] == [{"role": "user", "content": [{"text": "native please"}]}]


@pytest.mark.parametrize("p", providers())
def test_streaming_text(gw: Gateway, sdk: Any, p: Provider) -> None:
    prompt = "Tell me a story about a lighthouse keeper"
    got = stream_chat(sdk(p), p, messages=[user(prompt)])
    assert got.text == hello(p, prompt)
    assert got.roles == ["assistant"]
    assert got.finish_reasons == ["stop"]
    assert all(chunk.model == p.model for chunk in got.chunks)
    assert_usage(got.usage, words(prompt), words(hello(p, prompt)))
    sent = native(gw)
    assert sent.path == p.stream_path
    if p.family in ("openai", "anthropic"):
        assert sent.body["stream"] is True


@pytest.mark.parametrize("chunk_bytes", [1, 7])
@pytest.mark.parametrize("p", providers())
def test_streaming_split_at_awkward_bytes(gw: Gateway, sdk: Any, p: Provider, chunk_bytes: int) -> None:
    prompt = "split me: naïve café, 日本語 and 🚀 in small pieces"  # multi-byte characters get cut too
    got = stream_chat(
        sdk(p), p, messages=[user(prompt)], extra_headers={"x-mock-chunk-bytes": str(chunk_bytes)}
    )
    assert got.text == hello(p, prompt)
    assert got.roles == ["assistant"]
    assert got.finish_reasons == ["stop"]
    assert_usage(got.usage, words(prompt), words(hello(p, prompt)))
    assert native(gw).headers["x-mock-chunk-bytes"] == str(chunk_bytes)  # the provider did split


@pytest.mark.parametrize("p", providers())
def test_streaming_is_incremental(gw: Gateway, sdk: Any, p: Provider) -> None:
    """Deltas reach the client as the provider sends them, not all at the end."""
    prompt = "one two three four five six seven eight nine"
    stream = sdk(p).chat.completions.create(
        model=p.model,
        messages=[user(prompt)],
        stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "150"},
    )
    started = time.monotonic()
    arrivals: list[float] = []
    text = ""
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
                arrivals.append(time.monotonic() - started)
    assert text == hello(p, prompt)
    assert len(arrivals) >= 4
    # The provider paused 150 ms between events: the first words came long before the last.
    assert arrivals[-1] - arrivals[0] > 0.3, arrivals


@pytest.mark.parametrize("p", providers())
def test_streaming_without_usage_has_no_usage_chunk(gw: Gateway, sdk: Any, p: Provider) -> None:
    got = stream_chat(sdk(p), p, messages=[user("no usage please")], stream_options=openai.omit)
    assert got.text == hello(p, "no usage please")
    assert got.usage is None
    # Clients index choices[0] on every chunk when they did not ask for usage.
    assert all(len(chunk.choices) == 1 for chunk in got.chunks)


@pytest.mark.parametrize("p", providers())
def test_system_and_developer_messages(gw: Gateway, sdk: Any, p: Provider) -> None:
    system, developer, prompt = "You are a terse assistant.", "Answer in English only.", "hi there"
    completion = sdk(p).chat.completions.create(
        model=p.model,
        messages=[
            {"role": "system", "content": system},
            {"role": "developer", "content": developer},
            user(prompt),
        ],
    )
    assert completion.choices[0].message.content == hello(p, prompt)
    # The mock counts every text it was sent: system texts arrived as input.
    assert_usage(completion.usage, words(system, developer, prompt), words(hello(p, prompt)))
    body = native(gw).body
    assert native_system(p, body) == [system, developer]
    turns = native_messages(p, body)
    if p.family == "openai":  # OpenAI's format keeps them as messages, in order
        assert [m["role"] for m in turns] == ["system", "developer", "user"]
    else:  # the others take instructions outside the turns
        assert [m["role"] for m in turns] == ["user"]


@pytest.mark.parametrize("p", providers())
def test_multi_turn_conversation(gw: Gateway, sdk: Any, p: Provider) -> None:
    turns = [
        user("My name is Ada."),
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        user("What is my name?"),
    ]
    completion = sdk(p).chat.completions.create(model=p.model, messages=turns)
    assert completion.choices[0].message.content == hello(p, "What is my name?")
    assert_usage(
        completion.usage,
        words("My name is Ada.", "Nice to meet you, Ada.", "What is my name?"),
        words(hello(p, "What is my name?")),
    )
    sent = native_messages(p, native(gw).body)
    assistant = "model" if p.family == "gemini" else "assistant"
    assert [m["role"] for m in sent] == ["user", assistant, "user"]


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("p", providers())
def test_max_tokens_finishes_with_length(
    gw: Gateway, sdk: Any, p: Provider, stream: bool, param: str
) -> None:
    prompt = "write a long essay about the sea"
    kwargs: dict[str, Any] = {"model": p.model, "messages": [user(prompt)], param: 4}
    truncated = " ".join(hello(p, prompt).split()[:4])
    if stream:
        got = stream_chat(sdk(p), p, **{k: v for k, v in kwargs.items() if k != "model"})
        assert (got.text, got.finish_reasons) == (truncated, ["length"])
        assert_usage(got.usage, words(prompt), 4)
    else:
        completion = sdk(p).chat.completions.create(**kwargs)
        assert completion.choices[0].message.content == truncated
        assert completion.choices[0].finish_reason == "length"
        assert_usage(completion.usage, words(prompt), 4)
    body = native(gw).body
    limit = {
        "openai": lambda b: b.get("max_tokens") or b.get("max_completion_tokens"),
        "anthropic": lambda b: b["max_tokens"],
        "gemini": lambda b: b["generationConfig"]["maxOutputTokens"],
        "bedrock": lambda b: b["inferenceConfig"]["maxTokens"],
    }[p.family]
    assert limit(body) == 4


@pytest.mark.parametrize("p", providers())
def test_stop_sequences_reach_the_provider(gw: Gateway, sdk: Any, p: Provider) -> None:
    completion = sdk(p).chat.completions.create(
        model=p.model, messages=[user("count to ten")], stop=["seven", "\n\n"]
    )
    assert completion.choices[0].message.content == hello(p, "count to ten")
    body = native(gw).body
    stops = {
        "openai": lambda b: b["stop"],
        "anthropic": lambda b: b["stop_sequences"],
        "gemini": lambda b: b["generationConfig"]["stopSequences"],
        "bedrock": lambda b: b["inferenceConfig"]["stopSequences"],
    }[p.family]
    assert stops(body) == ["seven", "\n\n"]


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("p", providers())
def test_response_format_json_schema(gw: Gateway, sdk: Any, p: Provider) -> None:
    completion = sdk(p).chat.completions.create(
        model=p.model,
        messages=[user("describe Ada as JSON")],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    assert completion.choices[0].finish_reason == "stop"
    body = native(gw).body
    if p.family == "openai":
        assert body["response_format"]["json_schema"]["schema"] == PERSON_SCHEMA
    elif p.family == "anthropic":
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}
    elif p.family == "gemini":
        gen = body["generationConfig"]
        assert gen["responseMimeType"] == "application/json"
        # Gemini's Schema has no additionalProperties; the rest of the schema is kept.
        assert gen["responseSchema"] == {
            k: v for k, v in PERSON_SCHEMA.items() if k != "additionalProperties"
        }
    else:
        schema = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
        assert json.loads(schema["schema"]) == PERSON_SCHEMA
        assert schema["name"] == "person"


def test_concurrent_requests_across_providers_do_not_mix(gw: Gateway, sdk: Any) -> None:
    """Per-request state only: many streams and answers in flight at once each get their own reply."""
    clients = {p.name: sdk(p) for p in PROVIDERS}

    def one(job: tuple[Provider, int]) -> tuple[str, str]:
        p, i = job
        prompt = f"request number {i} for {p.name}"
        client = clients[p.name]
        if i % 2:
            text = stream_chat(
                client, p, messages=[user(prompt)], extra_headers={"x-mock-chunk-delay-ms": "5"}
            ).text
        else:
            text = (
                client.chat.completions.create(model=p.model, messages=[user(prompt)])
                .choices[0]
                .message.content
            )
        return text or "", hello(p, prompt)

    jobs = [(p, i) for p in PROVIDERS for i in range(4)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    assert len(results) == len(jobs)
    for got, expected in results:
        assert got == expected


# --- tools --------------------------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}, "offset_hours": {"type": "integer"}},
            "required": ["timezone"],
        },
    },
}
TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def assert_matches_schema(arguments: str, tool: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` is a JSON object valid for the tool's (flat) parameter schema."""
    args = json.loads(arguments)
    schema = tool["function"]["parameters"]
    assert isinstance(args, dict)
    assert set(schema["required"]) <= set(args) <= set(schema["properties"])
    for name, value in args.items():
        prop = schema["properties"][name]
        assert isinstance(value, TYPES[prop["type"]]), (name, value)
        if "enum" in prop:
            assert value in prop["enum"]
    return args


def assert_tool_call_ids(ids: list[str | None]) -> None:
    assert all(isinstance(i, str) and i for i in ids), ids
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("p", providers())
def test_tool_choice_required(gw: Gateway, sdk: Any, p: Provider) -> None:
    prompt = "What is the weather in Paris?"
    completion = sdk(p).chat.completions.create(
        model=p.model, messages=[user(prompt)], tools=[WEATHER], tool_choice="required"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert not choice.message.content
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert_tool_call_ids([calls[0].id])
    assert assert_matches_schema(calls[0].function.arguments, WEATHER) == {"city": "mock", "unit": "celsius"}
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    body = native(gw).body
    required = {
        "openai": lambda b: b["tool_choice"] == "required",
        "anthropic": lambda b: b["tool_choice"] == {"type": "any"},
        "gemini": lambda b: b["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}},
        "bedrock": lambda b: b["toolConfig"]["toolChoice"] == {"any": {}},
    }[p.family]
    assert required(body), body


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("p", providers())
def test_named_tool_choice(gw: Gateway, sdk: Any, p: Provider, stream: bool) -> None:
    kwargs: dict[str, Any] = {
        "messages": [user("What time is it in Tokyo?")],
        "tools": [WEATHER, CLOCK],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    if stream:
        got = stream_chat(sdk(p), p, **kwargs)
        assert got.finish_reasons == ["tool_calls"]
        assert list(got.calls) == [0]
        call = got.calls[0]
        name, arguments, ids = call["name"], call["arguments"], [call["id"]]
    else:
        completion = sdk(p).chat.completions.create(model=p.model, **kwargs)
        assert completion.choices[0].finish_reason == "tool_calls"
        calls = completion.choices[0].message.tool_calls or []
        assert len(calls) == 1
        name, arguments, ids = calls[0].function.name, calls[0].function.arguments, [calls[0].id]
    assert name == "get_time"
    assert_tool_call_ids(ids)
    assert assert_matches_schema(arguments, CLOCK) == {"timezone": "mock", "offset_hours": 1}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("p", providers())
def test_parallel_tool_calls(gw: Gateway, sdk: Any, p: Provider, stream: bool) -> None:
    kwargs: dict[str, Any] = {
        "messages": [user("Weather and time in Oslo?")],
        "tools": [WEATHER, CLOCK],
        "tool_choice": "auto",
    }
    if stream:
        got = stream_chat(sdk(p), p, **kwargs)
        assert got.finish_reasons == ["tool_calls"]
        assert got.text == ""
        assert sorted(got.calls) == [0, 1]
        calls = [(got.calls[i]["id"], got.calls[i]["name"], got.calls[i]["arguments"]) for i in (0, 1)]
        usage = got.usage
    else:
        completion = sdk(p).chat.completions.create(model=p.model, **kwargs)
        assert completion.choices[0].finish_reason == "tool_calls"
        message_calls = completion.choices[0].message.tool_calls or []
        calls = [(c.id, c.function.name, c.function.arguments) for c in message_calls]
        usage = completion.usage
    assert [name for _, name, _ in calls] == ["get_weather", "get_time"]
    assert_tool_call_ids([call_id for call_id, _, _ in calls])
    assert_matches_schema(calls[0][2], WEATHER)
    assert_matches_schema(calls[1][2], CLOCK)
    assert usage is not None and usage.prompt_tokens == words("Weather and time in Oslo?")


@pytest.mark.parametrize("p", providers("openai", "azure", "anthropic", "vertex-claude"))
def test_parallel_tool_calls_disabled(gw: Gateway, sdk: Any, p: Provider) -> None:
    """Where the provider can be told to make one call at a time, it is told."""
    completion = sdk(p).chat.completions.create(
        model=p.model,
        messages=[user("Weather and time in Oslo?")],
        tools=[WEATHER, CLOCK],
        parallel_tool_calls=False,
    )
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]


@pytest.mark.parametrize("p", providers())
def test_tool_choice_none_answers_in_text(gw: Gateway, sdk: Any, p: Provider) -> None:
    prompt = "Just say hello, no tools"
    completion = sdk(p).chat.completions.create(
        model=p.model, messages=[user(prompt)], tools=[WEATHER], tool_choice="none"
    )
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("stop", hello(p, prompt))
    assert not choice.message.tool_calls


NO_PARAMS = {"type": "function", "function": {"name": "roll_dice", "description": "Roll a die"}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("p", providers())
def test_tool_without_parameters(gw: Gateway, sdk: Any, p: Provider, stream: bool) -> None:
    kwargs: dict[str, Any] = {
        "messages": [user("roll a die")],
        "tools": [NO_PARAMS],
        "tool_choice": "required",
    }
    if stream:
        got = stream_chat(sdk(p), p, **kwargs)
        assert got.finish_reasons == ["tool_calls"]
        calls = [(c["id"], c["name"], c["arguments"]) for c in got.calls.values()]
    else:
        message = sdk(p).chat.completions.create(model=p.model, **kwargs).choices[0].message
        calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]
    assert len(calls) == 1
    call_id, name, arguments = calls[0]
    assert name == "roll_dice"
    assert_tool_call_ids([call_id])
    assert json.loads(arguments) == {}


@pytest.mark.parametrize("chunk_bytes", [1, 7])
@pytest.mark.parametrize("p", providers())
def test_streaming_tool_calls_split_at_awkward_bytes(
    gw: Gateway, sdk: Any, p: Provider, chunk_bytes: int
) -> None:
    got = stream_chat(
        sdk(p),
        p,
        messages=[user("Weather and time in Oslo?")],
        tools=[WEATHER, CLOCK],
        extra_headers={"x-mock-chunk-bytes": str(chunk_bytes)},
    )
    assert got.finish_reasons == ["tool_calls"]
    assert [got.calls[i]["name"] for i in sorted(got.calls)] == ["get_weather", "get_time"]
    assert json.loads(got.calls[0]["arguments"]) == {"city": "mock", "unit": "celsius"}
    assert json.loads(got.calls[1]["arguments"]) == {"timezone": "mock", "offset_hours": 1}
    assert_tool_call_ids([c["id"] for c in got.calls.values()])
    assert got.usage is not None and got.usage.completion_tokens > 0
    assert native(gw).headers["x-mock-chunk-bytes"] == str(chunk_bytes)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("p", providers())
def test_tool_result_second_turn(gw: Gateway, sdk: Any, p: Provider, stream: bool) -> None:
    client = sdk(p)
    first_turn = [user("Weather and time in Oslo?")]
    first = client.chat.completions.create(model=p.model, messages=first_turn, tools=[WEATHER, CLOCK])
    message = first.choices[0].message
    calls = message.tool_calls or []
    assert len(calls) == 2
    results = {"get_weather": "rainy, 9 degrees", "get_time": "14:05"}
    history = [
        *first_turn,
        # Both ways clients send the assistant turn back: the SDK object itself, or a dict.
        message.model_dump(exclude_none=True) if stream else message,
        *({"role": "tool", "tool_call_id": c.id, "content": results[c.function.name]} for c in calls),
    ]
    expected = "Tool said: rainy, 9 degrees; 14:05"
    if stream:
        got = stream_chat(client, p, messages=history, tools=[WEATHER, CLOCK])
        assert (got.text, got.finish_reasons, got.calls) == (expected, ["stop"], {})
    else:
        second = client.chat.completions.create(model=p.model, messages=history, tools=[WEATHER, CLOCK])
        assert second.choices[0].finish_reason == "stop"
        assert second.choices[0].message.content == expected
        assert not second.choices[0].message.tool_calls
    # The provider got the calls and their results in its own shape, paired by id (or name).
    _, second_request = received(gw, 2)
    body = second_request.body
    ids = [c.id for c in calls]
    if p.family == "openai":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "tool"]
        assert [m["tool_call_id"] for m in body["messages"][2:]] == ids
    elif p.family == "anthropic":
        assistant, results_turn = body["messages"][1:]
        assert [b["id"] for b in assistant["content"] if b["type"] == "tool_use"] == ids
        assert [b["tool_use_id"] for b in results_turn["content"]] == ids  # one user turn, both results
    elif p.family == "gemini":
        model_turn, results_turn = body["contents"][1:]
        assert [part["functionCall"]["name"] for part in model_turn["parts"]] == ["get_weather", "get_time"]
        responses = [part["functionResponse"] for part in results_turn["parts"]]
        assert [r["name"] for r in responses] == ["get_weather", "get_time"]
        assert responses[0]["response"] == {"content": "rainy, 9 degrees"}
    else:
        assistant, results_turn = body["messages"][1:]
        assert [b["toolUse"]["toolUseId"] for b in assistant["content"]] == ids
        assert [b["toolResult"]["toolUseId"] for b in results_turn["content"]] == ids
        assert body["toolConfig"]["tools"]


# --- images -------------------------------------------------------------------------------------------

# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a3a1b1bc0000000049454e44ae426082"
    )
).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
HTTPS_URL = "https://images.example.com/cats/tabby.png"


def image_message(text: str, *urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in urls)
    return {"role": "user", "content": parts}


def native_image_parts(p: Provider, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The image parts of the last native user turn."""
    turn = native_messages(p, body)[-1]
    if p.family == "openai":
        return [part for part in turn["content"] if part["type"] == "image_url"]
    if p.family == "anthropic":
        return [block for block in turn["content"] if block["type"] == "image"]
    if p.family == "gemini":
        return [part for part in turn["parts"] if "text" not in part]
    return [block for block in turn["content"] if "image" in block]


def expected_image_part(p: Provider, url: str) -> dict[str, Any]:
    if p.family == "openai":
        return {"type": "image_url", "image_url": {"url": url}}
    inline = url.startswith("data:")
    if p.family == "anthropic":
        if inline:
            return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if p.family == "gemini":
        if inline:
            return {"inlineData": {"mimeType": "image/png", "data": PNG}}
        return {"fileData": {"mimeType": "image/png", "fileUri": url}}
    return {"image": {"format": "png", "source": {"bytes": PNG}}}


@pytest.mark.parametrize("p", providers())
def test_image_as_base64_data_url(gw: Gateway, sdk: Any, p: Provider) -> None:
    completion = sdk(p).chat.completions.create(
        model=p.model, messages=[image_message("what is in this picture?", DATA_URL)]
    )
    assert completion.choices[0].message.content == hello(p, "what is in this picture?", images=1)
    assert native_image_parts(p, native(gw).body) == [expected_image_part(p, DATA_URL)]


@pytest.mark.parametrize(
    "p", providers("openai", "azure", "anthropic", "gemini", "vertex-gemini", "vertex-claude")
)
def test_image_by_https_url(gw: Gateway, sdk: Any, p: Provider) -> None:
    completion = sdk(p).chat.completions.create(
        model=p.model, messages=[image_message("what is in this picture?", HTTPS_URL)]
    )
    assert completion.choices[0].message.content == hello(p, "what is in this picture?", images=1)
    assert native_image_parts(p, native(gw).body) == [expected_image_part(p, HTTPS_URL)]


def test_bedrock_rejects_an_https_image_url(gw: Gateway, sdk: Any) -> None:
    """Converse takes images only as bytes or S3 locations: a clear 400, and no provider call."""
    p = BY_NAME["bedrock"]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(p).chat.completions.create(model=p.model, messages=[image_message("what is this?", HTTPS_URL)])
    assert caught.value.status_code == 400
    assert caught.value.param == "messages"
    assert "s3://" in caught.value.message
    assert gw.mock.requests() == []


@pytest.mark.parametrize("p", providers())
def test_two_images_streaming(gw: Gateway, sdk: Any, p: Provider) -> None:
    second = DATA_URL if p.name == "bedrock" else HTTPS_URL
    got = stream_chat(sdk(p), p, messages=[image_message("compare these two", DATA_URL, second)])
    assert got.text == hello(p, "compare these two", images=2)
    assert got.finish_reasons == ["stop"]
    assert native_image_parts(p, native(gw).body) == [
        expected_image_part(p, DATA_URL),
        expected_image_part(p, second),
    ]


@pytest.mark.parametrize("p", providers())
def test_large_image(gw: Gateway, sdk: Any, p: Provider) -> None:
    """A ~700 KB base64 image passes Envoy's buffers and the sidecar's gRPC limits, intact."""
    data = base64.b64encode(bytes(range(256)) * 2048).decode()  # 512 KiB of bytes
    url = f"data:image/png;base64,{data}"
    completion = sdk(p).chat.completions.create(model=p.model, messages=[image_message("big one", url)])
    assert completion.choices[0].message.content == hello(p, "big one", images=1)
    (part,) = native_image_parts(p, native(gw).body)
    assert data in json.dumps(part)


# --- provider errors ----------------------------------------------------------------------------------

# The provider's own message for each forced status, as the mock words it in its native format.
ERROR_MESSAGES: dict[str, dict[int, str]] = {
    "openai": {
        400: "Invalid request.",
        429: "Rate limit reached for requests",
        503: "The engine is currently overloaded",
        529: "Mock error 529.",
    },
    "anthropic": {
        400: "Invalid request.",
        429: "Number of requests has exceeded your rate limit.",
        503: "Mock error 503.",
        529: "Overloaded",
    },
    "gemini": {
        400: "Request contains an invalid argument.",
        429: "Resource has been exhausted",
        503: "The model is overloaded.",
        529: "Mock error 529.",
    },
    "bedrock": {
        400: "Malformed input request",
        429: "Too many requests, please wait before trying again.",
        503: "The service is temporarily unavailable.",
        529: "Mock error 529.",
    },
}
# The provider's error name, which the gateway keeps as the OpenAI error's ``code``.
ERROR_CODES: dict[str, dict[int, str]] = {
    "anthropic": {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"},
    "gemini": {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"},
    "bedrock": {400: "ValidationException", 429: "ThrottlingException", 503: "ServiceUnavailableException"},
    "openai": {429: "rate_limit_exceeded"},
}
TRANSLATED_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    529: "overloaded_error",
}
SDK_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    429: openai.RateLimitError,
    503: openai.InternalServerError,
    529: openai.InternalServerError,
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("status", [400, 429, 503, 529])
@pytest.mark.parametrize("p", providers())
def test_provider_error_status_and_message(
    gw: Gateway, sdk: Any, p: Provider, status: int, stream: bool
) -> None:
    started = time.monotonic()
    with pytest.raises(SDK_ERRORS[status]) as caught:
        sdk(p).chat.completions.create(
            model=p.model,
            messages=[user("hi")],
            stream=stream,
            extra_headers={"x-mock-status": str(status)},
        )
    assert time.monotonic() - started < 5
    err = caught.value
    assert err.status_code == status
    assert err.response.headers["content-type"].startswith("application/json")
    assert isinstance(err.body, dict) and ERROR_MESSAGES[p.family][status] in err.body["message"]
    assert ERROR_MESSAGES[p.family][status] in err.message
    assert err.type  # an OpenAI error type is always set
    if p.family != "openai":  # OpenAI's own error types pass through as OpenAI wrote them
        assert err.type == TRANSLATED_TYPES[status]
    code = ERROR_CODES.get(p.family, {}).get(status)
    if code:
        assert err.code == code
    if status in (429, 503, 529):  # the provider's back-off hint reaches the client (and the SDK)
        assert err.response.headers.get("retry-after") == "1"
    assert len(gw.mock.requests()) == 1  # no retries on a single-provider route


def test_bedrock_error_code_comes_from_its_error_type_header(gw: Gateway, sdk: Any) -> None:
    p = BY_NAME["bedrock"]
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(p).chat.completions.create(
            model=p.model, messages=[user("hi")], extra_headers={"x-mock-status": "401"}
        )
    assert caught.value.status_code == 401
    assert "security token included in the request is invalid" in caught.value.message
    assert caught.value.code == "UnrecognizedClientException"


@pytest.mark.parametrize("p", providers())
def test_mid_stream_error_raises_in_the_sdk(gw: Gateway, sdk: Any, p: Provider) -> None:
    prompt = "this stream breaks halfway through the answer"
    stream = sdk(p).chat.completions.create(
        model=p.model,
        messages=[user(prompt)],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-stream-error-after": "3"},
    )
    text = ""
    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                assert choice.finish_reason is None  # the answer never finished
    assert time.monotonic() - started < 5
    assert caught.value.message
    assert hello(p, prompt).startswith(text)
    assert text != hello(p, prompt)


MID_STREAM_CODES = {
    "openai": None,
    "anthropic": "overloaded_error",
    "gemini": "UNAVAILABLE",
    "bedrock": "ThrottlingException",
}


def sse_events(raw: bytes) -> list[str]:
    normalized = raw.replace(b"\r\n", b"\n").decode()
    assert normalized.endswith("\n\n"), normalized[-200:]
    events = []
    for block in normalized.strip("\n").split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        assert data, block
        events.append("\n".join(data))
    return events


@pytest.mark.parametrize("after", [0, 3])
@pytest.mark.parametrize("p", providers())
def test_mid_stream_error_is_a_well_formed_stream_end(gw: Gateway, p: Provider, after: int) -> None:
    """On the wire: whole SSE events, JSON chunks then one OpenAI error, and the body ends (no hang)."""
    resp = httpx.post(
        f"{gw.url}{p.prefix}/v1/chat/completions",
        json={"model": p.model, "messages": [user("break please")], "stream": True},
        headers={"x-mock-stream-error-after": str(after), "x-mock-chunk-bytes": "5"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.content)
    if events[-1] == "[DONE]":
        events.pop()
    assert "[DONE]" not in events
    *chunks, last = (json.loads(e) for e in events)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    # Provider events do not map one to one onto chunks, but what came before the failure arrives.
    assert bool(chunks) == bool(after), chunks
    assert set(last) == {"error"}
    assert last["error"]["message"] and last["error"]["type"]
    # The provider's own error name survives as the code (OpenAI's stream error has none).
    assert last["error"].get("code") == MID_STREAM_CODES[p.family]


# --- real recorded provider answers, replayed through the gateway ------------------------------------

TRANSLATORS = {"openai": tr_openai, "anthropic": tr_anthropic, "gemini": tr_gemini, "bedrock": tr_bedrock}


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a stream says, independent of how it was cut into chunks."""
    view: dict[str, Any] = {"text": "", "reasoning": "", "finish": [], "calls": {}, "usage": None}
    for chunk in chunks:
        if chunk.get("usage"):
            view["usage"] = {
                k: chunk["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            view["text"] += delta.get("content") or ""
            view["reasoning"] += delta.get("reasoning_content") or ""
            if choice.get("finish_reason"):
                view["finish"].append(choice["finish_reason"])
            for tc in delta.get("tool_calls") or ():
                slot = view["calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or tc.get("id")
                slot["name"] += (tc.get("function") or {}).get("name") or ""
                slot["arguments"] += (tc.get("function") or {}).get("arguments") or ""
    for slot in view["calls"].values():
        slot["arguments"] = json.loads(slot["arguments"] or "{}")
    return view


def message_view(completion: dict[str, Any]) -> dict[str, Any]:
    choice = completion["choices"][0]
    message = choice["message"]
    return {
        "content": message.get("content") or "",
        "reasoning": message.get("reasoning_content") or "",
        "calls": [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message.get("tool_calls") or ()
        ],
        "finish": choice["finish_reason"],
        "usage": {k: completion["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }


def translated_stream(p: Provider, raw: bytes) -> dict[str, Any]:
    translator = TRANSLATORS[p.family].ChatStream(p.model, True)
    out = translator.feed(raw) + translator.finish()
    return reassemble([json.loads(e) for e in sse_events(out) if e != "[DONE]"])


REPLAYS = [
    ("openai", "completions/stream.json", True),
    ("azure", "completions/tool_call.json", False),
    ("anthropic", "anthropic/stream_tool.json", True),
    ("anthropic", "anthropic/stream_thinking.json", True),
    ("anthropic", "anthropic/thinking.json", False),
    ("vertex-claude", "anthropic/stream_tool_empty_args.json", True),
    ("vertex-claude", "anthropic/tool.json", False),
    ("gemini", "vertex-gemini/stream_tool.json", True),
    ("vertex-gemini", "vertex-gemini/reasoning.json", False),
    ("vertex-gemini", "vertex-gemini/blocked.json", False),
    ("bedrock", "bedrock/tool.bin", True),
    ("bedrock", "bedrock/reasoning.bin", True),
    ("bedrock", "bedrock/cache_write.json", False),
]


@pytest.mark.parametrize(
    ("name", "fixture", "stream"), [pytest.param(*r, id=f"{r[0]}:{r[1]}") for r in REPLAYS]
)
def test_recorded_provider_answer_replayed(
    gw: Gateway, sdk: Any, name: str, fixture: str, stream: bool
) -> None:
    """A real provider's recorded answer (the conformance corpus), served by the mock and cut into
    single bytes, reaches the SDK exactly as the translator reads the whole recording."""
    p = BY_NAME[name]
    raw = (FIXTURE_DIR / fixture).read_bytes()
    headers = {"x-mock-fixture": fixture, "x-mock-chunk-bytes": "1"}
    messages = [user("replay")]
    if stream:
        got = stream_chat(sdk(p), p, messages=messages, extra_headers=headers)
        view = reassemble([chunk.model_dump() for chunk in got.chunks])
        expected = translated_stream(p, raw)
        assert len(expected["finish"]) == 1
    else:
        completion = sdk(p).chat.completions.create(model=p.model, messages=messages, extra_headers=headers)
        view = message_view(completion.model_dump())
        expected = message_view(TRANSLATORS[p.family].chat_response(json.loads(raw), p.model))
    assert (
        expected["text" if stream else "content"]
        or expected["calls"]
        or expected["finish"] == "content_filter"
    )
    assert view == expected
