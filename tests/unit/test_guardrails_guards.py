"""The guards one by one: builtins, the request text visitor, the webhook contract's replies,
moderation answers, and a streamed answer rewritten in each client format."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from extproc.config.guardrails import GuardSpec, PromptGuard, Rejection
from extproc.guardrails import build
from extproc.guardrails.base import StreamFilter
from extproc.guardrails.masker import Matcher
from extproc.guardrails.moderation import flagged_categories
from extproc.guardrails.patterns import compile_builtin, luhn
from extproc.guardrails.stream import GuardedStream
from extproc.guardrails.webhook import InvalidReply, read_reply
from extproc.mock.moderation import moderation
from extproc.pipeline.llm_request import LLMRequest
from extproc.pipeline.stages.guard_response import answer_slots


def mask(builtin: str, text: str) -> str:
    return Matcher([compile_builtin(builtin)]).mask(text)[0]


@pytest.mark.parametrize(
    ("builtin", "text", "masked"),
    [
        ("ssn", "my ssn is 123-45-6789.", "my ssn is <SSN>."),
        (
            "ssn",
            "not one: 000-12-3456, 666-12-3456, 923-45-6789",
            "not one: 000-12-3456, 666-12-3456, 923-45-6789",
        ),
        ("creditCard", "visa 4111-1111-1111-1111 ok", "visa <CREDIT_CARD> ok"),
        ("creditCard", "mc 5500 0000 0000 0004", "mc <CREDIT_CARD>"),
        ("creditCard", "amex 378282246310005", "amex <CREDIT_CARD>"),
        ("creditCard", "discover 6011111111111117", "discover <CREDIT_CARD>"),
        ("creditCard", "order 4000-1234-5678-9010", "order 4000-1234-5678-9010"),  # fails Luhn
        ("creditCard", "mc 5600 0000 0000 0002", "mc 5600 0000 0000 0002"),  # 56xx is not a family
        ("phoneNumber", "call (555) 123-4567 or +1 555.123.4567", "call <PHONE_NUMBER> or <PHONE_NUMBER>"),
        ("phoneNumber", "london +44 20 7946 0958", "london <PHONE_NUMBER>"),
        ("email", "mail John.Doe+x@mail.example.co.uk.", "mail <EMAIL_ADDRESS>."),
        ("caSin", "sin 046 454 286 and 046-454-287", "sin <CA_SIN> and 046-454-287"),
    ],
)
def test_builtins(builtin: str, text: str, masked: str) -> None:
    assert mask(builtin, text) == masked


def test_luhn() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")


def test_builtin_names_are_case_insensitive() -> None:
    assert compile_builtin("EMAIL").token == compile_builtin("Email").token == "<EMAIL_ADDRESS>"
    assert compile_builtin("credit_card").label == "creditCard"


def guards(config: dict[str, Any]) -> tuple[list, list]:
    return build(PromptGuard.model_validate(config))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- request texts by scope ------------------------------------------------------------------------

CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "sys a@b.co"},
        {"role": "user", "content": [{"type": "text", "text": "user a@b.co"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": '{"to": "a@b.co", "n": 1}'}}],
        },
        {"role": "tool", "content": "tool a@b.co"},
    ],
}
MESSAGES = {
    "model": "m",
    "system": [{"type": "text", "text": "sys a@b.co"}],
    "messages": [
        {"role": "user", "content": "user a@b.co"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"to": "a@b.co"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "tool a@b.co"}]},
    ],
}


@pytest.mark.parametrize(("api", "body"), [("completions", CHAT), ("messages", MESSAGES)])
def test_texts_by_scope(api: str, body: dict) -> None:
    req = LLMRequest(api, json.loads(json.dumps(body)))
    assert [s for _, s, _ in req.texts(["systemPrompt", "messages", "toolInput", "toolOutput"])] == [
        "systemPrompt",
        "messages",
        "toolInput",
        "toolOutput",
    ]
    assert [t for _, _, t in req.texts(["messages"])] == ["user a@b.co"]
    changed = req.visit_text(
        ["toolInput", "toolOutput"], lambda role, scope, text: text.replace("a@b.co", "X")
    )
    assert changed and req.changed
    dumped = json.dumps(req.body)
    assert dumped.count("a@b.co") == 2 and dumped.count("X") == 2  # system and user text untouched
    if api == "completions":
        assert json.loads(req.body["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {
            "to": "X",
            "n": 1,
        }


def test_regex_guard_masks_and_rejects_with_masked_texts() -> None:
    (masker,), _ = guards({"request": [{"regex": {"rules": [{"builtin": "email"}]}}]})
    verdict = masker.check_texts(["a a@b.co", "none"])
    assert verdict.action == "mask" and verdict.texts == ["a <EMAIL_ADDRESS>", None]
    (rejecter,), _ = guards(
        {
            "request": [
                {"regex": {"action": "reject", "rules": [{"builtin": "email"}]}, "rejection": {"status": 451}}
            ]
        }
    )
    verdict = rejecter.check_texts(["a a@b.co"])
    assert verdict.action == "reject" and verdict.status == 451 and verdict.texts == ["a <EMAIL_ADDRESS>"]
    assert verdict.matched == ["email"]


# --- the webhook contract -------------------------------------------------------------------------


def test_webhook_replies_read_as_agentgateway_reads_them() -> None:
    mask_reply = {"action": {"body": {"messages": [{"role": "user", "content": "x"}]}, "reason": "pii"}}
    assert read_reply("request", mask_reply, 1).texts == ["x"]
    choices = {"action": {"body": {"choices": [{"message": {"role": "assistant", "content": "y"}}]}}}
    assert read_reply("response", choices, 1).texts == ["y"]
    reject = read_reply("request", {"action": {"body": "no", "status_code": 422, "reason": "r"}}, 1)
    assert (reject.action, reject.status, reject.message, reject.reason) == ("reject", 422, "no", "r")
    assert read_reply("request", {"action": {"reason": "fine"}}, 1).action == "allow"
    # A reject without status_code is no Reject: agentgateway's lenient Pass.
    assert read_reply("request", {"action": {"body": "no"}}, 1).action == "allow"
    with pytest.raises(InvalidReply):
        read_reply("request", choices, 1)  # a response-shaped mask for a request
    with pytest.raises(InvalidReply):
        read_reply("request", {"nothing": 1}, 1)
    with pytest.raises(InvalidReply):
        read_reply("request", mask_reply, 2)  # fewer messages than were sent


# --- moderation -----------------------------------------------------------------------------------


def test_mock_moderation_answers_in_openais_shape_and_flags_the_seeds_examples() -> None:
    out = moderation({"model": "omni-moderation-latest", "input": ["How do I build a bomb?", "hello"]}, 7)
    assert out["id"] == "modr-mock7" and out["model"] == "omni-moderation-latest"
    first, second = out["results"]
    assert first["flagged"] and first["categories"]["violence"] and first["categories"]["illicit"]
    assert (
        set(first["categories"])
        == set(first["category_scores"])
        == set(first["category_applied_input_types"])
    )
    assert len(first["categories"]) == 13 and not second["flagged"]
    assert flagged_categories(out) == ["illicit", "illicit/violent", "violence"]
    hate = moderation({"input": "I hate all people from [group]"}, 1)["results"][0]
    assert hate["flagged"] and hate["categories"]["hate"]
    text_model = moderation({"model": "text-moderation-stable", "input": "x"}, 1)["results"][0]
    assert "illicit" not in text_model["categories"] and "category_applied_input_types" not in text_model
    assert flagged_categories({"oops": 1}) is None


# --- a streamed answer, in each client format ------------------------------------------------------


def openai_chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def anthropic_event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def openai_stream(pieces: list[str]) -> bytes:
    out = openai_chunk({"role": "assistant", "content": ""})
    out += b"".join(openai_chunk({"content": p}) for p in pieces)
    return out + openai_chunk({}, "stop") + b"data: [DONE]\n\n"


def anthropic_stream(pieces: list[str]) -> bytes:
    out = anthropic_event("message_start", {"type": "message_start", "message": {"id": "m", "content": []}})
    out += anthropic_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    out += anthropic_event("ping", {"type": "ping"})
    for p in pieces:
        out += anthropic_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
    out += anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += anthropic_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}})
    return out + anthropic_event("message_stop", {"type": "message_stop"})


def events(api: str, data: bytes) -> list[tuple[str | None, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        payload = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
        out.append((name, payload if payload == "[DONE]" else json.loads(payload or "null")))
    return out


def text_of(api: str, data: bytes) -> str:
    if api == "messages":
        return "".join(d["delta"]["text"] for n, d in events(api, data) if n == "content_block_delta")
    return "".join(
        (d["choices"][0]["delta"].get("content") or "")
        for _, d in events(api, data)
        if isinstance(d, dict) and d.get("choices")
    )


def guarded(api: str, config: dict, stream: bytes, cut: int | None = None) -> bytes:
    _, response = guards(config)

    def filters() -> list[StreamFilter]:
        return [g.stream(None) for g in response]  # type: ignore[arg-type]

    gs = GuardedStream(api, filters)
    parts = [stream] if cut is None else [stream[:cut], stream[cut:]]
    return b"".join(run(gs.feed(p)) for p in parts)


MASK_EMAIL = {"response": [{"regex": {"rules": [{"builtin": "email"}]}}]}
REJECT_EMAIL = {
    "response": [
        {
            "regex": {"action": "reject", "rules": [{"builtin": "email"}]},
            "rejection": {"status": 403, "body": "no emails"},
        }
    ]
}
PIECES = ["Write to jane.r", "oe@exam", "ple.org now", "."]


@pytest.mark.parametrize(("api", "make"), [("completions", openai_stream), ("messages", anthropic_stream)])
def test_stream_masks_a_split_email_in_the_clients_format(api: str, make: Any) -> None:
    source = make(PIECES)
    for cut in (None, 5, len(source) // 2, len(source) - 3):
        out = guarded(api, MASK_EMAIL, source, cut)
        assert text_of(api, out) == "Write to <EMAIL_ADDRESS> now."
        assert b"jane" not in out
        kinds = [n or (d if d == "[DONE]" else "chunk") for n, d in events(api, out)]
        assert kinds[-1] in ("message_stop", "[DONE]")  # the stream still ends as it should


def test_openai_stream_reject_ends_with_an_error_and_done() -> None:
    out = guarded("completions", REJECT_EMAIL, openai_stream(PIECES))
    evs = events("completions", out)
    assert evs[-1][1] == "[DONE]"
    error = evs[-2][1]["error"]
    assert (
        error["message"] == "no emails"
        and error["code"] == "guardrail_rejected"
        and error["type"] == "permission_error"
    )
    assert b"jane" not in out and text_of("completions", out) == "Write to "


def test_anthropic_stream_reject_ends_with_an_error_event() -> None:
    out = guarded("messages", REJECT_EMAIL, anthropic_stream(PIECES))
    name, data = events("messages", out)[-1]
    assert name == "error" and data == {
        "type": "error",
        "error": {"type": "permission_error", "message": "no emails"},
    }
    assert b"jane" not in out and b"message_stop" not in out


def test_openai_finish_chunk_carrying_text_is_masked_with_what_was_held() -> None:
    stream = (
        openai_chunk({"content": "mail a@b"})
        + openai_chunk({"content": ".com"}, "stop")
        + b"data: [DONE]\n\n"
    )
    out = guarded("completions", MASK_EMAIL, stream)
    assert text_of("completions", out) == "mail <EMAIL_ADDRESS>"
    assert [d["choices"][0]["finish_reason"] for _, d in events("completions", out) if isinstance(d, dict)][
        -1
    ] == "stop"


def test_two_guards_chain_in_order() -> None:
    config = {
        "response": [
            {"regex": {"rules": [{"pattern": "secret", "name": "S"}]}},
            {"regex": {"rules": [{"pattern": "<S>", "name": "T"}]}},  # sees the first guard's output
        ]
    }
    out = guarded("completions", config, openai_stream(["a sec", "ret b"]))
    assert text_of("completions", out) == "a <T> b"


def test_answer_slots_of_whole_answers() -> None:
    chat = {"choices": [{"message": {"content": "a"}}, {"message": {"content": None, "tool_calls": []}}]}
    assert [h[k] for h, k in answer_slots("completions", chat)] == ["a"]
    msg = {"content": [{"type": "text", "text": "b"}, {"type": "tool_use", "input": {}}]}
    assert [h[k] for h, k in answer_slots("messages", msg)] == ["b"]


def test_guard_spec_defaults() -> None:
    spec = GuardSpec("request", "regex", None, Rejection())
    assert spec.rejection.body.startswith("The request was rejected") and spec.scope == (
        "systemPrompt",
        "messages",
    )
