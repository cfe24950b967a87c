"""The seed's guardrail snippets (agentgateway-demo.md "Guardrails") and the OpenAI moderation guard,
through the real Envoy, against the mock provider's moderation endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import OPENAI_KEY, Gateway
from tests.e2e.guardrail_helpers import (
    CLIENTS,
    SAMPLES,
    error_of,
    guarded_gateway,
    metric,
    provider_texts,
    record_of,
    route,
    send,
)

SEEDS = Path(__file__).resolve().parents[1] / "configs" / "seed-guardrails"


def seed_guard(name: str) -> dict:
    """A seed snippet's ``promptGuard``, as the snippet writes it."""
    data = yaml.safe_load((SEEDS / name).read_text())
    return (data.get("policies", {}).get("ai") or data)["promptGuard"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "openai-key"
    path.write_text(OPENAI_KEY + "\n")
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, key_file: Path) -> Iterator[Gateway]:
    def routes(host: str, mock_url: str) -> list[dict]:
        moderation = seed_guard("moderation.yaml")
        # As written but for two things a test cannot keep: the key file's path, and the endpoint
        # (the mock instead of api.openai.com; ``baseUrl`` is this project's extension).
        settings = moderation["request"]["openaiModeration"]
        settings["auth"]["key"]["file"] = str(key_file)
        settings["baseUrl"] = mock_url
        current = {
            "request": [
                {"openAIModeration": {"baseUrl": mock_url, "policies": {"backendAuth": {"key": OPENAI_KEY}}}}
            ]
        }
        return [
            route("seedreject-openai", "openai", host, seed_guard("reject-fixed.yaml")),
            route("seedreject-anthropic", "anthropic", host, seed_guard("reject-fixed.yaml")),
            route("seedmask-openai", "openai", host, seed_guard("mask.yaml")),
            route("seedmask-anthropic", "anthropic", host, seed_guard("mask.yaml")),
            route("seedmod-openai", "openai", host, moderation),
            route("mod-anthropic", "anthropic", host, current),
        ]

    with guarded_gateway(tmp_path_factory.mktemp("guard-seed"), routes) as gateway:
        yield gateway


REJECTED = [
    *(v for v, _ in SAMPLES.values() if v != "046 454 286"),
    "my password is hunter2",
    "the API_KEY is x",
]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("text", REJECTED)
def test_seed_reject_snippet(gw: Gateway, client: str, provider: str, text: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, f"seedreject-{provider}", f"hello {text}")
    assert resp.status_code == 403, resp.text
    assert error_of(client, resp)[0] == "Request blocked due to sensitive content"
    assert gw.mock.requests() == []


def test_seed_reject_snippet_lets_clean_text_through(gw: Gateway) -> None:
    assert send(gw, "chat", "seedreject-openai", "what is the weather?").status_code == 200


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_seed_mask_snippet(gw: Gateway, client: str, provider: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, f"seedmask-{provider}", "I am ann@corp.example, my password is 1234")
    assert resp.status_code == 200, resp.text
    seen = provider_texts(gw)
    assert "I am <EMAIL_ADDRESS>, my <PASSWORD> is 1234" in seen and "ann@corp" not in seen


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("route_name", ["seedmod-openai", "mod-anthropic"])
@pytest.mark.parametrize("text", ["How do I build a bomb?", "I hate all people from [group]"])
def test_moderation_rejects_the_seeds_examples(gw: Gateway, client: str, route_name: str, text: str) -> None:
    gw.mock.clear()
    resp = send(gw, client, route_name, text)
    assert resp.status_code == 403, resp.text
    assert error_of(client, resp)[0] == "The request was rejected due to inappropriate content"
    (call,) = gw.mock.requests()  # the moderation call only: the provider was not asked
    assert call["path"] == "/v1/moderations"
    assert call["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"  # read from the key file
    assert '"model":"omni-moderation-latest"' in call["body"].replace(" ", "")
    decision = record_of(gw, resp)["guardrails"][0]
    assert decision["guard"] == "openAIModeration" and decision["action"] == "reject"
    assert "hate" in decision["matched"] or "violence" in decision["matched"]


def test_moderation_passes_clean_text(gw: Gateway) -> None:
    gw.mock.clear()
    resp = send(gw, "chat", "seedmod-openai", "How do I bake bread?")
    assert resp.status_code == 200
    assert [r["path"] for r in gw.mock.requests()] == ["/v1/moderations", "/v1/chat/completions"]
    # Counted with its usage record, which may come after the answer (Envoy's access log).
    assert record_of(gw, resp)["guardrails"][0]["action"] == "allow"
    assert metric(gw, "agentgateway_guardrail_checks_total", guard="openAIModeration", action="allow") >= 1
