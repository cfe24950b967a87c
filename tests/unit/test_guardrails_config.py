"""``policies.ai.promptGuard``: both shapes load, the seed's snippets do as written (or name the line
that breaks them), and every mistake is an error naming its line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from extproc.config.guardrails import PromptGuard
from extproc.config.loader import ConfigError, parse_text

SEEDS = Path(__file__).resolve().parents[1] / "configs" / "seed-guardrails"

ROUTE = """\
binds:
- port: 3000
  listeners:
  - routes:
    - name: guarded
      backends: [{ai: {name: o, provider: {openAI: {}}}}]
"""


def with_policies(fragment: str) -> str:
    """A gateway config whose one route has ``fragment`` (a ``policies:`` or ``promptGuard:`` text)."""
    first = next(ln for ln in fragment.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    if not first.startswith("policies:"):
        fragment = "policies:\n  ai:\n" + textwrap.indent(fragment, "    ")
    return ROUTE + textwrap.indent(fragment, "      ")


def prompt_guard(fragment: str) -> PromptGuard:
    loaded = parse_text(with_policies(fragment), "gw.yaml")
    pg = loaded.config.binds[0].listeners[0].routes[0].policies.ai.prompt_guard  # type: ignore[union-attr]
    assert pg is not None
    return pg


def errors_of(fragment: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(with_policies(fragment), "gw.yaml")
    return [str(i) for i in info.value.issues]


def test_seed_reject_snippet_as_written_is_an_error_naming_its_line() -> None:
    text = (SEEDS / "reject-as-written.yaml").read_text()
    (error,) = errors_of(text)
    line = next(i for i, ln in enumerate(with_policies(text).splitlines(), 1) if "- pattern" in ln)
    assert error.startswith(f"gw.yaml:{line}: invalid YAML")
    assert "indent it under the key whose list it belongs to" in error


def test_seed_reject_snippet_fixed_loads_in_the_older_shape() -> None:
    pg = prompt_guard((SEEDS / "reject-fixed.yaml").read_text())
    (spec,) = pg.request_specs()
    assert spec.kind == "regex" and spec.config.verb == "reject"
    assert (spec.rejection.status, spec.rejection.body) == (403, "Request blocked due to sensitive content")
    assert [r.builtin or r.name for r in spec.config.rules] == [
        "ssn",
        "creditCard",
        "phoneNumber",
        "email",
        "PASSWORD",
        "API_KEY",
    ]
    assert spec.scope == ("systemPrompt", "messages")


def test_seed_mask_snippet_loads_with_its_capitalised_builtin() -> None:
    (spec,) = prompt_guard((SEEDS / "mask.yaml").read_text()).request_specs()
    assert spec.config.verb == "mask"
    assert [r.builtin for r in spec.config.rules] == ["Email", None]


def test_seed_moderation_snippet_loads() -> None:
    (spec,) = prompt_guard((SEEDS / "moderation.yaml").read_text()).request_specs()
    assert spec.kind == "openAIModeration"
    assert spec.config.model == "omni-moderation-latest"
    assert spec.config.key.file == "/path/to/openai-key"


def test_current_shape_lists_guards_with_their_own_rejection_and_scope() -> None:
    pg = prompt_guard(
        """
promptGuard:
  request:
    - regex: {action: reject, rules: [{builtin: creditCard}]}
      rejection: {status: 422, body: "no cards", headers: {set: {x-why: card}}}
      scope: [messages, toolOutput]
    - webhook:
        target: {host: "guard.internal:8000"}
        forwardHeaderMatches: [{name: X-Tenant, value: {regex: "acme-.*"}}]
        headers: {x-model: "llmRequest.model"}
        failureMode: failOpen
        timeout: 2s
    - openAIModeration: {policies: {backendAuth: {key: "$OPENAI_API_KEY"}}}
  response:
    - regex: {rules: [{pattern: "secret-[0-9]+", name: SECRET, replacement: "[REDACTED]"}]}
    - webhook: {target: "http://guard.internal:8000"}
"""
    )
    regex, webhook, moderation = pg.request_specs()
    assert (regex.rejection.status, regex.rejection.headers.set) == (422, {"x-why": "card"})
    assert regex.scope == ("messages", "toolOutput")
    assert webhook.config.failure_mode == "failOpen"
    assert webhook.config.forward_header_matches[0].name == "x-tenant"
    assert webhook.rejection.status == 403 and moderation.config.key == "$OPENAI_API_KEY"
    assert [s.kind for s in pg.response_specs()] == ["regex", "webhook"]
    assert pg.response_specs()[1].config.target.host == "http://guard.internal:8000"


def test_older_shape_on_the_response_side() -> None:
    pg = prompt_guard("promptGuard:\n  response:\n    regex: {action: reject, rules: [{builtin: SSN}]}\n")
    (spec,) = pg.response_specs()
    assert spec.config.verb == "reject" and spec.rejection.status == 403


@pytest.mark.parametrize(
    ("fragment", "field", "message"),
    [
        (
            "promptGuard: {request: [{regex: {rules: [{builtin: passport}]}}]}",
            "promptGuard.request[0].regex.rules[0]",
            "unknown builtin 'passport'",
        ),
        (
            "promptGuard: {request: {regex: {rules: [{pattern: '(unclosed'}]}}}",
            "promptGuard.request.regex.rules[0]",
            "not a valid regular expression",
        ),
        (
            "promptGuard: {request: [{regex: {rules: [{pattern: 'x*'}]}}]}",
            "promptGuard.request[0].regex.rules[0]",
            "can match the empty string",
        ),
        (
            "promptGuard: {request: [{regex: {rules: [{builtin: email}]}, webhook: {target: 'h:1'}}]}",
            "promptGuard.request[0]",
            "exactly one of",
        ),
        (
            "promptGuard: {request: [{webhook: {target: 'h:1', failureMode: sometimes}}]}",
            "promptGuard.request[0].webhook.failureMode",
            "failClosed",
        ),
        (
            "promptGuard: {request: [{webhook: {target: 'h:1', headers: {x-a: 'jwt.sub +'}}}]}",
            "promptGuard.request[0].webhook.headers",
            "not a valid CEL expression",
        ),
        (
            # An answer has text and tool calls: no system prompt, no tool results.
            "promptGuard: {response: [{regex: {rules: [{builtin: ssn}]}, scope: [systemPrompt]}]}",
            "promptGuard.response[0].scope[0]",
            "toolInput",
        ),
        (
            "promptGuard: {request: [{regex: {rules: [{builtin: ssn}]}, scope: [everything]}]}",
            "promptGuard.request[0].scope[0]",
            "systemPrompt",
        ),
        (
            "promptGuard: {request: [{regex: {rules: [{builtin: ssn}]}, rejection: {status: 200}}]}",
            "promptGuard.request[0].rejection.status",
            "greater than or equal to 400",
        ),
        (
            "promptGuard: {request: [{bedrockGuard: {}}]}",
            "promptGuard.request[0].bedrockGuard",
            "unknown or unsupported field",
        ),
    ],
)
def test_mistakes_name_line_and_field(fragment: str, field: str, message: str) -> None:
    errors = errors_of(fragment)
    prefix = "gw.yaml:9: binds[0].listeners[0].routes[0].policies.ai."
    assert any(e.startswith(prefix + field + ":") and message in e for e in errors), errors


def test_the_seed_snippets_are_the_seeds_own_text() -> None:
    # The seeds sit beside the checkout, as the conformance corpus does (tests/unit/conformance_util.py).
    seed = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "agentgateway-demo.md"
    assert seed.exists(), f"seed not found at {seed}; clone the shared/ directory next to the repo"
    text = seed.read_text()
    for name in ("reject-as-written.yaml", "mask.yaml", "moderation.yaml"):
        assert (SEEDS / name).read_text() in text, name
    yaml.safe_load((SEEDS / "reject-fixed.yaml").read_text())


def test_a_mistake_in_block_style_names_its_own_line() -> None:
    fragment = """promptGuard:
  request:
    - regex:
        rules:
          - builtin: email
          - builtin: passport
"""
    (error,) = errors_of(fragment)
    line = next(i for i, ln in enumerate(with_policies(fragment).splitlines(), 1) if "passport" in ln)
    assert error.startswith(f"gw.yaml:{line}: ") and "unknown builtin 'passport'" in error


def test_literal_keys_never_show_in_a_config_repr() -> None:
    from extproc.config.providers import NamedProvider

    pg = PromptGuard.model_validate(
        {
            "request": [
                {
                    "bedrockGuardrails": {
                        "guardrailIdentifier": "gr1",
                        "guardrailVersion": "1",
                        "region": "us-east-1",
                        "policies": {
                            "backendAuth": {
                                "aws": {
                                    "accessKeyId": "AKIDLITERAL0001",
                                    "secretAccessKey": "aws-secret-literal",
                                    "sessionToken": "aws-session-literal",
                                }
                            }
                        },
                    }
                },
                {
                    "bedrockGuardrails": {
                        "guardrailIdentifier": "gr2",
                        "guardrailVersion": "1",
                        "region": "us-east-1",
                        "policies": {"backendAuth": {"key": "bedrock-api-key-literal"}},
                    }
                },
                {"openAIModeration": {"auth": {"key": "sk-moderation-literal"}}},
            ]
        }
    )
    provider = NamedProvider.model_validate(
        {
            "name": "p",
            "provider": {"openAI": {}},
            "backendAuth": {"key": "sk-provider-literal"},
            "policies": {"backendAuth": {"key": "sk-policy-literal"}},
        }
    )
    shown = repr(pg) + str(pg) + repr(provider) + str(provider)
    for secret in (
        "AKIDLITERAL0001",
        "aws-secret-literal",
        "aws-session-literal",
        "bedrock-api-key-literal",
        "sk-moderation-literal",
        "sk-provider-literal",
        "sk-policy-literal",
    ):
        assert secret not in shown
    # The values are still there for the code that uses them.
    auth = pg.request_specs()[0].config.auth
    assert (
        auth.aws.secret_access_key == "aws-secret-literal"
        and provider.backend_auth.key == "sk-provider-literal"
    )


@pytest.mark.parametrize(
    "guard",
    [
        "webhook: {target: 'http://guard.internal:8000', timeout: soon}",
        "openAIModeration: {timeout: soon}",
        "googleModelArmor: {templateId: t, projectId: p, location: us-central1, timeout: soon}",
        "bedrockGuardrails: {guardrailIdentifier: g, guardrailVersion: '1', region: us-east-1, timeout: soon}",
        "presidio: {analyzerUrl: 'http://presidio:3000', timeout: soon}",
    ],
)
def test_every_remote_guards_timeout_is_checked_and_named_with_its_line(guard: str) -> None:
    (error,) = errors_of(f"promptGuard:\n  request:\n  - {guard}\n")
    line = next(
        i
        for i, ln in enumerate(with_policies(f"promptGuard:\n  request:\n  - {guard}\n").splitlines(), 1)
        if "soon" in ln
    )
    assert error.startswith(f"gw.yaml:{line}: "), error
    assert "timeout: invalid duration 'soon'" in error, error
