"""Header names and metadata keys shared by Envoy's config and the sidecars."""

from __future__ import annotations

METADATA_NAMESPACE = "io.llm_gateway"

# Set by the router phase for the upstream phase. Envoy strips them from clients
# at the listener (early header mutation) and the upstream phase strips them
# before anything leaves for a provider.
API = "x-gw-api"  # the client API: completions, messages, models, embeddings, passthrough
PATH = "x-gw-path"  # the client's path after urlRewrite, for passthrough and retries
ROUTE = "x-gw-route"  # the gateway route id

INTERNAL_HEADERS: tuple[str, ...] = (API, PATH, ROUTE, "x-gw-user", "x-gw-tenant", "x-gw-identity")

# Whatever a client sends as credentials never reaches a provider; each attempt
# also clears what an earlier attempt set, since Envoy keeps header mutations across retries.
CREDENTIAL_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "cookie",
)
