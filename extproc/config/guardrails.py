"""``policies.ai.promptGuard``: guardrails on requests and answers, in both of agentgateway's shapes.

The current shape lists guards, each with one kind and its own ``rejection``::

    promptGuard:
      request:
        - regex: {action: mask, rules: [{builtin: email}, {pattern: "sk-[a-z0-9]+", name: KEY}]}
          scope: [systemPrompt, messages, toolOutput]
        - webhook: {target: {host: "guard:8000"}, failureMode: failOpen}
          rejection: {status: 422, body: "blocked"}
      response:
        - regex: {action: reject, rules: [{builtin: creditCard}]}

The older shape (agentgateway-demo.md) maps each kind to its config, the rejection inside the
regex action: ``request: {regex: {action: {reject: {response: {body, status}}}, rules}, openaiModeration:
{...}}``. Both load into the same list of ``GuardSpec``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Discriminator, Field, Tag, field_validator, model_validator

from extproc.config.base import CheckedDuration, Strict
from extproc.config.bedrock_guardrails import BedrockGuardrails
from extproc.config.guard_parts import RegexRule, Rejection, Target, lower_word
from extproc.config.model_armor import GoogleModelArmor
from extproc.config.presidio import Presidio
from extproc.config.stream_window import StreamWindowFields

Scope = Literal["systemPrompt", "messages", "toolInput", "toolOutput"]
DEFAULT_SCOPE: tuple[Scope, ...] = ("systemPrompt", "messages")
RESPONSE_SCOPE: tuple[Scope, ...] = ("messages",)  # an answer's text; toolInput adds its tool calls
_CEL_VARIABLES = frozenset({"request", "jwt", "llmRequest"})


class LegacyReject(Strict):
    response: Rejection = Rejection()


class LegacyAction(Strict):
    """The older ``action: {reject: {response: {body, status}}}`` (or ``{mask: {}}``)."""

    reject: LegacyReject | None = None
    mask: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> LegacyAction:
        if (self.reject is None) == (self.mask is None):
            raise ValueError("set one of reject, mask")
        return self


class RegexGuard(Strict):
    action: Literal["mask", "reject"] | LegacyAction = "mask"
    rules: list[RegexRule] = Field(min_length=1)
    replacement: str | None = None  # the default token for every rule (extension)

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return lower_word(v)

    @property
    def verb(self) -> str:
        if isinstance(self.action, LegacyAction):
            return "reject" if self.action.reject is not None else "mask"
        return self.action

    @property
    def legacy_rejection(self) -> Rejection | None:
        if isinstance(self.action, LegacyAction) and self.action.reject is not None:
            return self.action.reject.response
        return None


class HeaderValueMatch(Strict):
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderValueMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("set one of exact, regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"{self.regex!r} is not a valid regular expression: {exc}") from None
        return self


class HeaderMatch(Strict):
    name: str
    value: HeaderValueMatch | None = None  # unset: the header with any value

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return v.strip().lower()


class Webhook(StreamWindowFields):
    target: Target
    forward_header_matches: list[HeaderMatch] = Field([], alias="forwardHeaderMatches")
    headers: dict[str, str] = {}  # header (or :path, :method, :authority) -> CEL expression
    failure_mode: Literal["failClosed", "failOpen"] = Field("failClosed", alias="failureMode")
    # Unset: agentgateway's 10 s, or less when config.limits.sidecarTimeout is shorter.
    timeout: CheckedDuration | None = None
    # streamBatch, streamOverlap (extension): a streamed answer in overlapping windows (stream_window.py).

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, v: Any) -> Any:
        return {"host": v} if isinstance(v, str) else v

    @field_validator("headers")
    @classmethod
    def _cel(cls, v: dict[str, str]) -> dict[str, str]:
        import cel

        for name, expr in v.items():
            try:
                program = cel.compile(expr)
            except Exception as exc:
                raise ValueError(f"{name}: {expr!r} is not a valid CEL expression ({exc})") from None
            unknown = set(program.variables()) - _CEL_VARIABLES
            if unknown:
                raise ValueError(
                    f"{name}: {expr!r} uses {', '.join(sorted(unknown))}: use request, jwt, llmRequest"
                )
        return v


class KeyFile(Strict):
    file: str


class KeyAuth(Strict):
    key: str | KeyFile = Field(repr=False)  # a literal, $ENV_VAR, or {file: path}: never in a repr


class ModerationPolicies(Strict):
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")


class OpenAIModeration(Strict):
    model: str = "omni-moderation-latest"
    auth: KeyAuth | None = None  # the older shape
    policies: ModerationPolicies | None = None  # agentgateway's current shape
    base_url: str = Field("https://api.openai.com", alias="baseUrl")  # extension: another endpoint
    timeout: CheckedDuration | None = None  # as a webhook's

    @property
    def key(self) -> str | KeyFile | None:
        if self.auth is not None:
            return self.auth.key
        if self.policies is not None and self.policies.backend_auth is not None:
            return self.policies.backend_auth.key
        return None


_MODERATION = AliasChoices("openAIModeration", "openaiModeration")


@dataclass(frozen=True)
class GuardSpec:
    """One guard as the gateway runs it, whichever shape the config used."""

    phase: str  # request, response
    kind: str  # regex, webhook, openAIModeration
    config: Any
    rejection: Rejection
    scope: tuple[Scope, ...] = DEFAULT_SCOPE


def _kinds(model: Any, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(n, getattr(model, n)) for n in names if getattr(model, n) is not None]


# Field name -> the kind's config name (KINDS in extproc/guardrails/__init__.py), in check order.
_KIND_NAMES = {
    "regex": "regex",
    "webhook": "webhook",
    "openai_moderation": "openAIModeration",
    "google_model_armor": "googleModelArmor",
    "presidio": "presidio",
    "bedrock_guardrails": "bedrockGuardrails",
}
_REQUEST_KINDS = tuple(_KIND_NAMES)
_RESPONSE_KINDS = tuple(k for k in _KIND_NAMES if k != "openai_moderation")  # moderation: request side


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(_KIND_NAMES[n] for n in names)


class RequestGuard(Strict):
    regex: RegexGuard | None = None
    webhook: Webhook | None = None
    openai_moderation: OpenAIModeration | None = Field(None, validation_alias=_MODERATION)
    google_model_armor: GoogleModelArmor | None = Field(None, alias="googleModelArmor")
    presidio: Presidio | None = None
    bedrock_guardrails: BedrockGuardrails | None = Field(None, alias="bedrockGuardrails")
    rejection: Rejection | None = None
    scope: list[Scope] = list(DEFAULT_SCOPE)

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one(self) -> RequestGuard:
        found = _kinds(self, _REQUEST_KINDS)
        if len(found) != 1:
            raise ValueError(f"a guard has exactly one of {_one_of(_REQUEST_KINDS)}")
        return self

    def spec(self, phase: str = "request") -> GuardSpec:
        name, config = _kinds(self, _REQUEST_KINDS)[0]
        legacy = config.legacy_rejection if isinstance(config, RegexGuard) else None
        rejection = self.rejection or legacy or Rejection()
        return GuardSpec(phase, _KIND_NAMES[name], config, rejection, tuple(self.scope))


class ResponseGuard(Strict):
    regex: RegexGuard | None = None
    webhook: Webhook | None = None
    google_model_armor: GoogleModelArmor | None = Field(None, alias="googleModelArmor")
    presidio: Presidio | None = None
    bedrock_guardrails: BedrockGuardrails | None = Field(None, alias="bedrockGuardrails")
    rejection: Rejection | None = None
    # An answer's text (messages) and the tool-call arguments the model writes (toolInput).
    scope: list[Literal["messages", "toolInput"]] = list(RESPONSE_SCOPE)

    @field_validator("scope", mode="before")
    @classmethod
    def _scope(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one(self) -> ResponseGuard:
        if len(_kinds(self, _RESPONSE_KINDS)) != 1:
            raise ValueError(f"a response guard has exactly one of {_one_of(_RESPONSE_KINDS)}")
        return self

    def spec(self) -> GuardSpec:
        name, config = _kinds(self, _RESPONSE_KINDS)[0]
        name = _KIND_NAMES[name]
        legacy = config.legacy_rejection if isinstance(config, RegexGuard) else None
        rejection = self.rejection or legacy or Rejection()
        return GuardSpec("response", name, config, rejection, tuple(self.scope))


class LegacyRequestGuards(Strict):
    """The older mapping shape: each kind once, checked in this order (cheapest first)."""

    regex: RegexGuard | None = None
    webhook: Webhook | None = None
    openai_moderation: OpenAIModeration | None = Field(None, validation_alias=_MODERATION)
    google_model_armor: GoogleModelArmor | None = Field(None, alias="googleModelArmor")
    presidio: Presidio | None = None
    bedrock_guardrails: BedrockGuardrails | None = Field(None, alias="bedrockGuardrails")

    def specs(self) -> list[GuardSpec]:
        return [
            RequestGuard.model_construct(
                **{name: config, "scope": list(DEFAULT_SCOPE), "rejection": None}
            ).spec()
            for name, config in _kinds(self, _REQUEST_KINDS)
        ]


class LegacyResponseGuards(Strict):
    regex: RegexGuard | None = None
    webhook: Webhook | None = None
    google_model_armor: GoogleModelArmor | None = Field(None, alias="googleModelArmor")
    presidio: Presidio | None = None
    bedrock_guardrails: BedrockGuardrails | None = Field(None, alias="bedrockGuardrails")

    def specs(self) -> list[GuardSpec]:
        out = []
        for name, config in _kinds(self, _RESPONSE_KINDS):
            legacy = config.legacy_rejection if isinstance(config, RegexGuard) else None
            rejection = legacy or Rejection()
            out.append(GuardSpec("response", _KIND_NAMES[name], config, rejection, RESPONSE_SCOPE))
        return out


def _shape(v: Any) -> str:
    # The tags start with "tagged-": the loader leaves them out of the field names it reports.
    return "tagged-list" if isinstance(v, list) else "tagged-map"


RequestGuards = Annotated[
    Annotated[list[RequestGuard], Tag("tagged-list")] | Annotated[LegacyRequestGuards, Tag("tagged-map")],
    Discriminator(_shape),
]
ResponseGuards = Annotated[
    Annotated[list[ResponseGuard], Tag("tagged-list")] | Annotated[LegacyResponseGuards, Tag("tagged-map")],
    Discriminator(_shape),
]


class PromptGuard(Strict):
    request: RequestGuards = []
    response: ResponseGuards = []
    # agentgateway checks streamed answers only with ``streaming: Enabled``; here they are checked
    # unless ``Disabled``, so a stream cannot bypass the response guards.
    streaming: Literal["Enabled", "Disabled"] = "Enabled"
    # Characters a streamed answer may be held back while a match is undecided (extension).
    stream_max_hold: int = Field(4096, alias="streamMaxHold", ge=16)

    def request_specs(self) -> list[GuardSpec]:
        if isinstance(self.request, list):
            return [g.spec() for g in self.request]
        return self.request.specs()

    def response_specs(self) -> list[GuardSpec]:
        if isinstance(self.response, list):
            return [g.spec() for g in self.response]
        return self.response.specs()
