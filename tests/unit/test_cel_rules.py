"""``authorization`` CEL rules: agentgateway's allow/deny/require semantics, the variables a rule
sees, errors failing closed, and bad rules as config errors with file and line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from extproc.authz.caller import Caller, Forbidden
from extproc.authz.request import AuthRequest
from extproc.authz.rules import CelRules
from extproc.authz.server import denied
from extproc.config.auth import AuthorizationPolicy
from extproc.config.loader import ConfigError, parse_text
from tests.unit.policy_util import auth_request, chat_body

ENGINEER = Caller(
    method="jwt",
    subject="ada",
    groups=["engineering"],
    claims={"sub": "ada", "groups": ["engineering"], "email": "Ada@Corp.com"},
)
MARKETER = Caller(
    method="jwt", subject="mo", groups=["marketing"], claims={"sub": "mo", "groups": ["marketing"]}
)
RESEARCH_KEY = Caller(method="api_key", api_key_id="k1", api_key={"id": "k1", "team": "research", "tier": 2})
ANONYMOUS = Caller()


def rules(*items: object) -> CelRules:
    return CelRules(AuthorizationPolicy.model_validate({"rules": list(items)}))


def allowed(r: CelRules, req: AuthRequest, caller: Caller = ANONYMOUS) -> bool:
    try:
        asyncio.run(r.authorize(req, caller))
    except Forbidden:
        return False
    return True


def chat(model: str = "gpt-4o-mini", **kw: object) -> AuthRequest:
    return auth_request("POST", "/openai/v1/chat/completions", chat_body(model), **kw)  # type: ignore[arg-type]


# --- semantics -------------------------------------------------------------------------------


def test_a_bare_string_is_an_allow_rule() -> None:
    only_post = rules('request.method == "POST"')
    assert allowed(only_post, chat())
    assert not allowed(only_post, auth_request("GET", "/openai/v1/models", None))


def test_one_true_allow_rule_is_enough() -> None:
    r = rules('llm.model == "gpt-4o"', {"allow": 'llm.model == "gpt-4o-mini"'})
    assert allowed(r, chat("gpt-4o-mini"))
    assert allowed(r, chat("gpt-4o"))
    assert not allowed(r, chat("o3"))


def test_a_true_deny_rule_refuses_even_when_an_allow_rule_matches() -> None:
    r = rules('request.method == "POST"', {"deny": 'llm.model.startsWith("o")'})
    assert allowed(r, chat("gpt-4o"))
    assert not allowed(r, chat("o3"))


def test_deny_rules_alone_are_a_denylist() -> None:
    r = rules({"deny": 'llm.model == "o3"'})
    assert allowed(r, chat("gpt-4o"))
    assert not allowed(r, chat("o3"))


def test_every_require_rule_must_hold() -> None:
    r = rules({"require": 'request.method == "POST"'}, {"require": "!llm.streaming"})
    assert allowed(r, chat())
    assert not allowed(r, auth_request("POST", "/openai/v1/chat/completions", chat_body(stream=True)))
    assert not allowed(r, auth_request("PUT", "/openai/v1/chat/completions", chat_body()))


def test_no_rules_allow_everything() -> None:
    assert allowed(rules(), chat())


def test_marketing_may_use_only_gpt_4o_mini() -> None:
    r = rules({"deny": 'has(jwt.groups) && "marketing" in jwt.groups && llm.model != "gpt-4o-mini"'})
    assert allowed(r, chat("gpt-4o-mini"), MARKETER)
    assert not allowed(r, chat("gpt-4o"), MARKETER)
    assert allowed(r, chat("gpt-4o"), ENGINEER)
    assert allowed(r, chat("gpt-4o"), RESEARCH_KEY)  # no groups claim: the has() guard


def test_only_engineering_may_post_to_openai() -> None:
    r = rules(
        {
            "require": '!(request.method == "POST" && request.path.startsWith("/openai/")) '
            '|| jwt.groups.exists(g, g == "engineering")'
        }
    )
    assert allowed(r, chat(), ENGINEER)
    assert not allowed(r, chat(), MARKETER)
    assert not allowed(r, chat(), ANONYMOUS)
    assert allowed(r, auth_request("POST", "/anthropic/v1/messages", chat_body()), MARKETER)


def test_api_key_metadata_is_apikey() -> None:
    r = rules('apiKey.team == "research" && apiKey.tier >= 2')
    assert allowed(r, chat(), RESEARCH_KEY)
    assert not allowed(r, chat(), Caller(method="api_key", api_key={"team": "sales", "tier": 3}))
    assert not allowed(r, chat(), ENGINEER)  # no key: apiKey is {} and apiKey.team errors -> false


# --- errors fail closed ----------------------------------------------------------------------


def test_an_erroring_allow_rule_counts_as_false() -> None:
    r = rules('jwt.role == "admin"')  # no such claim: a run-time error
    assert not allowed(r, chat(), ENGINEER)
    assert allowed(rules('jwt.role == "admin"', "true"), chat(), ENGINEER)


def test_an_erroring_deny_rule_counts_as_true() -> None:
    # agentgateway would let this through; here an error never does.
    r = rules({"deny": 'jwt.country in ["CU", "IR"]'})
    assert not allowed(r, chat(), ENGINEER)
    guarded = rules({"deny": 'has(jwt.country) && jwt.country in ["CU", "IR"]'})
    assert allowed(guarded, chat(), ENGINEER)
    assert not allowed(guarded, chat(), Caller(method="jwt", claims={"country": "CU"}))


def test_an_erroring_require_rule_counts_as_false() -> None:
    assert not allowed(rules({"require": 'request.headers["x-team"] == "a"'}), chat())
    assert allowed(rules({"require": 'request.headers["x-team"] == "a"'}), chat(headers={"x-team": "a"}))


def test_a_rule_that_is_not_boolean_counts_as_an_error() -> None:
    assert not allowed(rules("llm.model"), chat())
    assert not allowed(rules({"deny": "llm.model"}), chat())
    assert allowed(rules({"deny": "size(llm.model) == 0"}), chat())


def test_the_refusal_is_403_without_the_rule() -> None:
    r = rules({"deny": 'llm.model == "secret-model-name"'})
    req = chat("secret-model-name")
    with pytest.raises(Forbidden) as info:
        asyncio.run(r.authorize(req, ANONYMOUS))
    resp = denied(info.value, req.api)
    assert resp.denied_response.status.code == 403
    body = json.loads(resp.denied_response.body)
    assert body["error"]["code"] == "forbidden"
    assert "secret-model-name" not in resp.denied_response.body
    assert "llm.model" not in resp.denied_response.body


# --- what a rule sees ------------------------------------------------------------------------


def test_request_variables() -> None:
    req = auth_request("POST", "/openai/v1/chat/completions?debug=1", chat_body(), headers={"x-team": "blue"})
    for expr in (
        'request.path == "/openai/v1/chat/completions"',
        'request.pathAndQuery == "/openai/v1/chat/completions?debug=1"',
        'request.host == "gw.example.com"',
        'request.scheme == "http"',
        'request.uri == "http://gw.example.com/openai/v1/chat/completions?debug=1"',
        'request.version == "HTTP/1.1"',
        'request.headers["x-team"] == "blue"',
        'source.address == "10.1.2.3" && source.port == 51234',
        'llm.model == "gpt-4o-mini" && llm.requestModel == "gpt-4o-mini"',
        '!llm.streaming && !llm.stream && llm.api == "completions"',
    ):
        assert allowed(rules(expr), req), expr


def test_credentials_never_reach_a_rule() -> None:
    req = chat(headers={"authorization": "Bearer sk-secret", "x-api-key": "sk-other", "cookie": "s=1"})
    for name in ("authorization", "x-api-key", "cookie"):
        assert allowed(rules(f'!("{name}" in request.headers)'), req), name


def test_extension_functions() -> None:
    assert allowed(rules('request.path.split("/")[1] == "openai"'), chat())
    assert allowed(rules('jwt.email.lowerAscii().endsWith("@corp.com")'), chat(), ENGINEER)
    assert allowed(rules("math.greatest(1, size(jwt.groups)) == 1"), chat(), ENGINEER)


def test_rules_get_only_the_fields_they_read_and_whole_values_when_they_need_them() -> None:
    # Fewer values to convert into CEL; the same answers.
    claims = {"sub": "ada", "groups": ["engineering"], "email": "a@corp.com", "iat": 1}
    caller = Caller(method="jwt", claims=claims)
    assert allowed(rules('jwt["email"] == "a@corp.com" && jwt.groups[0] == "engineering"'), chat(), caller)
    assert allowed(rules("size(jwt) == 4"), chat(), caller)
    assert allowed(rules("size(jwt) == 4 && has(jwt.sub)"), chat(), caller)
    assert allowed(rules({"deny": "has(jwt.nope)"}, "jwt.iat == 1"), chat(), caller)


def test_fields_used() -> None:
    from extproc.authz.cel_expr import fields_used

    assert fields_used(
        ['request.method == "POST"', "jwt . groups.exists(g, g == 'x') && jwt['email'] != ''"]
    ) == {
        "request": frozenset({"method"}),
        "jwt": frozenset({"groups", "email"}),
    }
    assert fields_used(["size(apiKey) > 0 && apiKey.team == 'a'"]) == {"apiKey": None}
    assert fields_used(['llm.model == "llm"']) == {"llm": None}  # the name in a literal: all of it


# --- bad rules are config errors ---------------------------------------------------------------

CONFIG = """\
binds:
- port: 3000
  listeners:
  - routes:
    - name: r
      matches: [{path: {pathPrefix: /x}}]
      backends: [{ai: {name: a, provider: {openAI: {}}}}]
      policies:
        authorization:
          rules:
          - 'request.method == "POST"'
          - RULE
"""


def errors_of(rule: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_text(CONFIG.replace("RULE", rule), "gw.yaml")
    return [str(i) for i in info.value.issues]


def test_a_rule_that_does_not_parse_names_file_line_and_field() -> None:
    [issue] = errors_of("{deny: 'llm.model == '}")
    assert issue.startswith(
        "gw.yaml:12: binds[0].listeners[0].routes[0].policies.authorization.rules[1].deny: "
    )
    assert "invalid CEL expression" in issue and "column" in issue


def test_a_bare_string_rule_error_names_the_rule() -> None:
    [issue] = errors_of("'request.method =='")
    assert issue.startswith(
        "gw.yaml:12: binds[0].listeners[0].routes[0].policies.authorization.rules[1].allow: "
    )


def test_a_misspelt_variable_is_a_config_error() -> None:
    [issue] = errors_of("{require: 'jtw.sub == \"x\"'}")
    assert "rules[1].require" in issue and "unknown variable jtw" in issue


def test_macro_variables_are_not_unknown() -> None:
    parse_text(CONFIG.replace("RULE", "'jwt.groups.exists(g, g == \"eng\") && [1].all(n, n > 0)'"), "gw.yaml")


def test_a_rule_needs_exactly_one_kind() -> None:
    [issue] = errors_of("{allow: 'true', deny: 'false'}")
    assert "rules[1]: set exactly one of allow, deny, require" in issue


def test_check_reports_a_bad_rule_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("RULE", "{deny: 'llm.model.startsWith('}"))
    result = subprocess.run(
        [sys.executable, "-m", "extproc", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{path}:12: " in result.stderr and "rules[1].deny" in result.stderr
