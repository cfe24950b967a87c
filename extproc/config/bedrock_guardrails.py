"""``bedrockGuardrails``: an AWS Bedrock guardrail (ApplyGuardrail) as a request or response guard.

agentgateway's fields, plus this project's ``endpointUrl``, ``failureMode``, ``timeout`` and
``streamBatch`` and ``streamOverlap`` (every remote guard's, extproc/config/stream_window.py)::

    - bedrockGuardrails:
        guardrailIdentifier: gr-abc123        # or the guardrail's ARN
        guardrailVersion: "1"                 # or DRAFT
        region: us-east-1
        policies:                             # optional: without it, the AWS credential chain
          backendAuth:
            aws: {accessKeyId: $AWS_KEY_ID, secretAccessKey: $AWS_SECRET, sessionToken: $AWS_TOKEN}
            # or key: $BEDROCK_API_KEY (a Bedrock API key, sent as a bearer token)

Credentials are taken as the Bedrock provider takes them: a Bedrock API key, or SigV4 from the
standard AWS credential chain (environment, profile, SSO, container and instance roles), plus
agentgateway's explicit ``aws`` keys. Values are literals or ``$ENV_VAR``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from extproc.config.base import CheckedDuration, Strict
from extproc.config.stream_window import StreamWindowFields

# ApplyGuardrail's own patterns (the AWS API reference): an id or the guardrail's ARN; a number or DRAFT.
_IDENTIFIER = re.compile(
    r"^([a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$"
)
_VERSION = re.compile(r"^([1-9][0-9]{0,7}|DRAFT)$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")


class AWSKeys(Strict):
    # Literals or $ENV_VAR: never in the model's repr (a logged config, an error's context).
    access_key_id: str = Field(alias="accessKeyId", min_length=1, repr=False)
    secret_access_key: str = Field(alias="secretAccessKey", min_length=1, repr=False)
    session_token: str | None = Field(None, alias="sessionToken", repr=False)


class BedrockAuth(Strict):
    key: str | None = Field(None, repr=False)  # a Bedrock API key (bearer), as a provider's backendAuth.key
    aws: AWSKeys | None = None

    @model_validator(mode="after")
    def _one(self) -> BedrockAuth:
        if (self.key is None) == (self.aws is None):
            raise ValueError("set one of key (a Bedrock API key), aws (accessKeyId, secretAccessKey)")
        return self


class BedrockPolicies(Strict):
    backend_auth: BedrockAuth | None = Field(None, alias="backendAuth")


class BedrockGuardrails(StreamWindowFields):
    guardrail_identifier: str = Field(alias="guardrailIdentifier")
    guardrail_version: str = Field(alias="guardrailVersion")
    region: str
    policies: BedrockPolicies | None = None
    # Extension: where ApplyGuardrail is sent instead of bedrock-runtime.{region}.amazonaws.com (a VPC
    # endpoint, or a test server). Signed for service bedrock in ``region`` all the same.
    endpoint_url: str | None = Field(None, alias="endpointUrl")
    failure_mode: Literal["failClosed", "failOpen"] = Field("failClosed", alias="failureMode")
    timeout: CheckedDuration | None = (
        None  # as a webhook's: agentgateway's 10 s, within limits.sidecarTimeout
    )
    # streamBatch, streamOverlap: a streamed answer in overlapping windows (stream_window.py).

    @field_validator("guardrail_version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # YAML reads 1 as a number

    @field_validator("guardrail_identifier")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENTIFIER.match(v):
            raise ValueError(f"{v!r} is not a guardrail id (lowercase letters and digits) or guardrail ARN")
        return v

    @field_validator("guardrail_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError(f"{v!r} is not a guardrail version: use a number (1, 2, ...) or DRAFT")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION.match(v):
            raise ValueError(f"{v!r} is not an AWS region like us-east-1")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[A-Za-z0-9.\-\[\]:]+(/.*)?$", v):
            raise ValueError(f"{v!r}: use an http:// or https:// URL")
        return v

    @property
    def auth(self) -> BedrockAuth | None:
        return self.policies.backend_auth if self.policies is not None else None
