"""``googleModelArmor``: a Model Armor template checking prompts and answers (agentgateway's fields).

agentgateway's ``{templateId, projectId, location}`` (location defaults to ``us-central1``, and
the endpoint is then ``modelarmor.{location}.rep.googleapis.com``), plus this project's
``failureMode`` and ``timeout`` (as a webhook's), ``streamBatch``, ``streamOverlap``,
``credentials`` and ``endpoint``; agentgateway's ``policies`` load but only implicit GCP auth
applies (``GoogleModelArmor.policies``)::

    googleModelArmor:
      projectId: my-project
      location: us-central1
      templateId: llm-guard
      failureMode: failClosed          # or failOpen
      timeout: 2s
      streamBatch: 512                 # streamed answers: windows of 512 characters,
      streamOverlap: 128               #   each one's last 128 checked again with the next
      credentials: {file: /secrets/sa.json}   # unset: Application Default Credentials
      endpoint: https://modelarmor.example.internal   # tests and private endpoints only

An ``endpoint`` of ``http://`` is plaintext, for a local test server or emulator: it must be a
loopback address, and no credentials are ever sent to it. Any other endpoint is TLS with the
credentials.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from extproc.config.base import CheckedDuration, Strict
from extproc.config.stream_window import StreamWindowFields

DEFAULT_LOCATION = "us-central1"
# Resource ids go into the template's resource name (and its routing header): no slashes.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_ENDPOINT = re.compile(
    r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d+))?/?$"
)


@dataclass(frozen=True)
class Endpoint:
    host: str  # as a gRPC target names it: brackets kept around an IPv6 address
    port: int
    plaintext: bool

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_endpoint(value: str) -> Endpoint:
    m = _ENDPOINT.match(value.strip())
    if m is None:
        raise ValueError(f"{value!r}: use host[:port], https://host[:port] or http://127.0.0.1:port")
    host, plaintext = m.group("host"), m.group("scheme") == "http"
    if plaintext and not _loopback(host):
        # Prompts in cleartext over a network, to a server that cannot be authenticated: no.
        raise ValueError(
            f"{value!r}: a plaintext (http://) endpoint must be a loopback address (a local test "
            "server); use https:// for any other host"
        )
    port = int(m.group("port") or (80 if plaintext else 443))
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return Endpoint(host, port, plaintext)


class CredentialsFile(Strict):
    file: str  # a service account key or an external account (workload identity federation) file


class GoogleModelArmor(StreamWindowFields):
    template_id: str = Field(alias="templateId")
    project_id: str = Field(alias="projectId")
    location: str = DEFAULT_LOCATION
    failure_mode: Literal["failClosed", "failOpen"] = Field("failClosed", alias="failureMode")
    timeout: CheckedDuration | None = (
        None  # unset: 10 s, or less when config.limits.sidecarTimeout is shorter
    )
    # streamBatch, streamOverlap: a streamed answer in overlapping windows (stream_window.py).
    credentials: CredentialsFile | None = None  # unset: Application Default Credentials
    endpoint: str | None = None  # unset: modelarmor.{location}.rep.googleapis.com:443
    # agentgateway's backend policies for its connection to Model Armor ("for GCP authentication,
    # defaults to implicit GCP auth"): backendAuth, backendTLS, http, tcp, health, backendTunnel,
    # header modifiers, transformations. Accepted so agentgateway configs load; only
    # ``backendAuth: {gcp: {}}`` (implicit GCP auth, what this guard does anyway) applies, the rest
    # is named in a warning when the guard is built (``ignored_policies``).
    policies: dict[str, Any] | None = Field(None, repr=False)  # may hold keys: never in a repr

    @field_validator("template_id", "project_id", "location")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"{v!r}: use letters, digits and . _ : - (no slashes or spaces)")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            parse_endpoint(v)
        return v

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for name, value in (v or {}).items():
            if value is not None and not isinstance(value, dict | list):
                raise ValueError(f"policies.{name}: an object, as agentgateway's backend policies are")
        return v

    def ignored_policies(self) -> list[str]:
        """The policies this guard does not apply (all but implicit GCP auth), as dotted names."""
        out: list[str] = []
        for name, value in (self.policies or {}).items():
            if name == "backendAuth" and isinstance(value, dict):
                out += [f"backendAuth.{k}" for k in value if k != "gcp"]
            elif value is not None:
                out.append(name)
        return out

    @property
    def template(self) -> str:
        """The template's resource name, as the sanitize calls name it."""
        return f"projects/{self.project_id}/locations/{self.location}/templates/{self.template_id}"

    @property
    def target(self) -> Endpoint:
        if self.endpoint is not None:
            return parse_endpoint(self.endpoint)
        return Endpoint(f"modelarmor.{self.location}.rep.googleapis.com", 443, plaintext=False)
