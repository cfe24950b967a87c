"""Providers and AI backends: one provider, or groups of providers for failover."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from extproc.config.ai import RouteType
from extproc.config.base import Strict, check_name
from extproc.config.policies import BackendPolicies, KeyAuth

# --- providers -----------------------------------------------------------


class OpenAIProvider(Strict):
    model: str | None = None


class AnthropicProvider(Strict):
    model: str | None = None


class GeminiProvider(Strict):
    model: str | None = None


class VertexProvider(Strict):
    model: str | None = None
    region: str = "us-central1"
    project_id: str | None = Field(None, alias="projectId")


class BedrockProvider(Strict):
    model: str | None = None
    region: str = "us-east-1"
    # agentgateway's fields for the guardrail Bedrock's Converse API applies itself, refused until
    # the gateway sends them: a guardrail the operator configured must never be silently skipped.
    guardrail_identifier: str | None = Field(None, alias="guardrailIdentifier")
    guardrail_version: str | None = Field(None, alias="guardrailVersion")

    @field_validator("guardrail_identifier", "guardrail_version")
    @classmethod
    def _no_guardrails(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(
                "a guardrail on the Bedrock provider (Converse's guardrailConfig) is not supported; "
                "check requests and answers with a Bedrock guardrail through "
                "policies.ai.promptGuard.bedrockGuardrails instead ({guardrailIdentifier, "
                "guardrailVersion, region}; README: AWS Bedrock Guardrails)"
            )
        return v


class AzureProvider(Strict):
    model: str | None = None
    resource_name: str | None = Field(None, alias="resourceName")
    deployment_name: str | None = Field(None, alias="deploymentName")
    api_version: str = Field("2024-10-21", alias="apiVersion")


class ProviderSpec(Strict):
    """Exactly one provider kind, as agentgateway spells them."""

    openai: OpenAIProvider | None = Field(None, alias="openAI")
    anthropic: AnthropicProvider | None = None
    gemini: GeminiProvider | None = None
    vertex: VertexProvider | None = None
    bedrock: BedrockProvider | None = None
    azure: AzureProvider | None = None

    @model_validator(mode="after")
    def _one(self) -> ProviderSpec:
        if len(self.kinds()) != 1:
            raise ValueError("set exactly one provider: openAI, anthropic, gemini, vertex, bedrock or azure")
        return self

    def kinds(self) -> list[str]:
        return [
            k for k in ("openai", "anthropic", "gemini", "vertex", "bedrock", "azure") if getattr(self, k)
        ]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def settings(self) -> Any:
        return getattr(self, self.kind)


class NamedProvider(Strict):
    name: str
    provider: ProviderSpec
    host_override: str | None = Field(None, alias="hostOverride")
    path_override: str | None = Field(None, alias="pathOverride")
    path_prefix: str | None = Field(None, alias="pathPrefix")
    routes: dict[str, RouteType] | None = None
    backend_auth: KeyAuth | None = Field(None, alias="backendAuth")
    policies: BackendPolicies | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return str(check_name(v, provider=True))


class ProviderGroup(Strict):
    providers: list[NamedProvider] = Field(min_length=1)


class AIBackend(Strict):
    name: str | None = None
    provider: ProviderSpec | None = None
    host_override: str | None = Field(None, alias="hostOverride")
    path_override: str | None = Field(None, alias="pathOverride")
    path_prefix: str | None = Field(None, alias="pathPrefix")
    routes: dict[str, RouteType] | None = None
    groups: list[ProviderGroup] | None = None
    policies: BackendPolicies | None = None

    @model_validator(mode="after")
    def _shape(self) -> AIBackend:
        if (self.provider is None) == (self.groups is None):
            raise ValueError("set either provider or groups")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return check_name(v, provider=True)  # the single-provider form's provider name

    def provider_groups(self) -> list[list[NamedProvider]]:
        """The single-provider form is one group of one provider."""
        if self.groups is not None:
            return [g.providers for g in self.groups]
        assert self.provider is not None
        single = NamedProvider(
            name=self.name or self.provider.kind,
            provider=self.provider,
            hostOverride=self.host_override,
            pathOverride=self.path_override,
            pathPrefix=self.path_prefix,
            routes=self.routes,
        )
        return [[single]]


class Backend(Strict):
    ai: AIBackend
    weight: int = Field(1, ge=1)
