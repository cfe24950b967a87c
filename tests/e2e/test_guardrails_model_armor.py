"""The googleModelArmor guard through the real Envoy, with the real ``google-cloud-modelarmor`` client
talking gRPC to a server speaking Model Armor's API (tests/model_armor_server.py): prompts rejected,
passed and de-identified, answers masked and rejected (whole and streamed, chat and Messages
clients, OpenAI and Anthropic providers), and an unreachable or slow Model Armor with failClosed
and failOpen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extproc.ports import free_port
from tests.e2e.conftest import Gateway
from tests.e2e.guardrail_helpers import (
    CLIENTS,
    PROMPT_LOGGING,
    answer_text,
    error_of,
    guarded_gateway,
    metric,
    provider_texts,
    record_of,
    reply_pieces,
    route,
    send,
    stream_error,
)
from tests.model_armor_server import LOCATION, PROJECT, ModelArmorServer, template_name

BODY = "blocked by policy"
REJECTION = {"status": 422, "body": BODY}


@pytest.fixture(scope="module")
def armor() -> Iterator[ModelArmorServer]:
    server = ModelArmorServer().start()
    yield server
    server.stop()


def armor_config(endpoint: str, template: str, **extra: object) -> dict:
    return {
        "projectId": PROJECT,
        "location": LOCATION,
        "templateId": template,
        "endpoint": endpoint,
        "timeout": "500ms",
        **extra,
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, armor: ModelArmorServer) -> Iterator[Gateway]:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def routes(host: str, _: str) -> list[dict]:
        both = {
            "request": [
                {"googleModelArmor": armor_config(armor.endpoint, "inspect"), "rejection": REJECTION}
            ],
            "response": [
                {
                    "googleModelArmor": armor_config(
                        armor.endpoint, "deidentify", streamBatch=24, streamOverlap=16
                    )
                }
            ],
        }
        deid = {"request": [{"googleModelArmor": armor_config(armor.endpoint, "deidentify")}]}
        down = {"request": [{"googleModelArmor": armor_config(closed, "inspect")}]}
        down_open = {
            "request": [{"googleModelArmor": armor_config(closed, "inspect", failureMode="failOpen")}]
        }
        slow_open = {
            "request": [{"googleModelArmor": armor_config(armor.endpoint, "inspect", failureMode="failOpen")}]
        }
        return [
            route("armor-openai", "openai", host, both),
            route("armor-anthropic", "anthropic", host, both),
            route("deid-openai", "openai", host, deid),
            route("down-openai", "openai", host, down),
            route("downopen-openai", "openai", host, down_open),
            route("slowopen-openai", "openai", host, slow_open),
        ]

    with guarded_gateway(tmp_path_factory.mktemp("guard-armor"), routes, PROMPT_LOGGING) as gateway:
        yield gateway


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_matching_prompt_is_rejected(
    gw: Gateway, armor: ModelArmorServer, client: str, provider: str
) -> None:
    gw.mock.clear()
    resp = send(gw, client, f"armor-{provider}", "I hate all people and want to hurt them")
    assert resp.status_code == 422, resp.text
    assert error_of(client, resp)[0] == f"{BODY} (Google Model Armor: rai, rai:dangerous)"
    assert gw.mock.requests() == []
    call = armor.last("SanitizeUserPrompt")
    assert (
        call["name"] == template_name("inspect") and call["text"] == "I hate all people and want to hurt them"
    )
    assert record_of(gw, resp)["guardrails"] == [
        {
            "phase": "request",
            "guard": "googleModelArmor",
            "action": "reject",
            "matched": ["rai", "rai:dangerous"],
            "reason": "match",
        }
    ]
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="googleModelArmor", action="reject") >= 1


@pytest.mark.parametrize("client", CLIENTS)
def test_a_clean_prompt_passes(gw: Gateway, armor: ModelArmorServer, client: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, "armor-openai", "a clean question")
    assert resp.status_code == 200, resp.text
    assert "a clean question" in provider_texts(gw)
    assert armor.last("SanitizeUserPrompt")["text"] == "a clean question"
    assert record_of(gw, resp)["guardrails"][0] == {
        "phase": "request",
        "guard": "googleModelArmor",
        "action": "allow",
    }


@pytest.mark.parametrize("client", CLIENTS)
def test_a_deidentifying_template_masks_the_prompt(gw: Gateway, client: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, "deid-openai", "my email is christian@solo.io, help")
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    assert "my email is [EMAIL_ADDRESS], help" in seen and "christian@solo.io" not in seen
    record = record_of(gw, resp)
    assert record["guardrails"][0] == {
        "phase": "request",
        "guard": "googleModelArmor",
        "action": "mask",
        "matched": ["sdp"],
        "reason": "deidentified",
    }
    assert "[EMAIL_ADDRESS]" in str(record["prompt"]) and "christian@solo.io" not in str(record)


def test_a_prompt_rejected_for_sensitive_data_is_not_logged(gw: Gateway) -> None:
    resp = send(gw, "chat", "armor-openai", "my email is christian@solo.io, help")
    assert resp.status_code == 422 and error_of("chat", resp)[0] == f"{BODY} (Google Model Armor: sdp)"
    record = record_of(gw, resp)
    assert "christian@solo.io" not in str(record) and "<SENSITIVE_DATA>" in str(record["prompt"])


@pytest.mark.parametrize(
    ("route_name", "text", "status", "action"),
    [
        ("down-openai", "hello", 503, "fail_closed"),  # nothing listening
        ("armor-openai", "slow-please", 503, "fail_closed"),  # no answer within the timeout
        ("armor-openai", "break-me", 503, "fail_closed"),  # an INTERNAL error
        ("downopen-openai", "hello", 200, "fail_open"),
        ("slowopen-openai", "slow-please", 200, "fail_open"),
    ],
)
def test_failure_modes(gw: Gateway, route_name: str, text: str, status: int, action: str) -> None:
    resp = send(gw, "chat", route_name, text)
    assert resp.status_code == status, resp.text
    if status == 503:
        message, code = error_of("chat", resp)
        assert code == "guardrail_unavailable" and "googleModelArmor guardrail is unavailable" in message
    assert record_of(gw, resp)["guardrails"][0]["action"] == action
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="googleModelArmor", action=action) >= 1


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_the_answer_is_masked(
    gw: Gateway, armor: ModelArmorServer, client: str, provider: str, stream: bool
) -> None:
    armor.received.clear()
    pieces = reply_pieces("Write to ", "bo@exa", "mple.com", " today, or to al@example.org", " soon")
    resp = send(gw, client, f"armor-{provider}", "hi", stream, pieces)
    assert resp.status_code == 200, resp.text
    assert "bo@exa" not in resp.text and "mple.com" not in resp.text and "al@example" not in resp.text
    assert answer_text(client, resp) == "Write to [EMAIL_ADDRESS] today, or to [EMAIL_ADDRESS] soon"
    sent = armor.texts("SanitizeModelResponse")
    whole = "Write to bo@example.com today, or to al@example.org soon"
    if stream:  # overlapping windows
        assert len(sent) > 1 and all(t in whole for t in sent) and sent[-1].endswith(" soon")
    else:
        assert sent == [whole]
    response = [g for g in record_of(gw, resp)["guardrails"] if g["phase"] == "response"]
    assert response == [
        {
            "phase": "response",
            "guard": "googleModelArmor",
            "action": "mask",
            "matched": ["sdp"],
            "reason": "deidentified",
        }
    ]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_the_answer_is_rejected(gw: Gateway, client: str, provider: str) -> None:
    expected = (
        "The request was rejected due to inappropriate content (Google Model Armor: rai, rai:dangerous)"
    )
    resp = send(gw, client, f"armor-{provider}", "hi", False, reply_pieces("Sure, I will hurt them."))
    assert resp.status_code == 403 and error_of(client, resp)[0] == expected
    streamed = send(
        gw,
        client,
        f"armor-{provider}",
        "hi",
        True,
        reply_pieces("Sure, I can do that: I will hurt", " them all."),
    )  # the first window has "hurt", the next one (overlapping it) "hurt them"
    assert streamed.status_code == 200 and stream_error(client, streamed)["message"] == expected
    assert "hurt them" not in streamed.text
