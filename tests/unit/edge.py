"""A client request through the gateway's edge (parse and validate) and then every provider's
translator, as the router phase and egress run them: for the input tests and the fuzz suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import yaml

from extproc import egress, gateway, tokens
from extproc.config.loader import parse_text
from extproc.errors import GatewayError
from extproc.pipeline import client_request
from extproc.pipeline.llm_request import LLMRequest

# Each provider kind, with the models that pick a different translator on it.
_PROVIDERS: list[tuple[str, dict, str]] = [
    ("openai", {"openAI": {}}, "gpt-4o"),
    ("azure", {"azure": {"resourceName": "r", "deploymentName": "d"}}, "gpt-4o"),
    ("anthropic", {"anthropic": {}}, "claude-sonnet-4"),
    ("gemini", {"gemini": {}}, "gemini-2.5-flash"),
    ("vertex-gemini", {"vertex": {"projectId": "p", "region": "us-east5"}}, "gemini-2.5-flash"),
    ("vertex-claude", {"vertex": {"projectId": "p", "region": "us-east5"}}, "claude-sonnet-4"),
    ("vertex-open", {"vertex": {"projectId": "p", "region": "us-east5"}}, "meta/llama-3.3-70b-instruct-maas"),
    ("bedrock-claude", {"bedrock": {"region": "us-east-1"}}, "anthropic.claude-sonnet-4"),
    ("bedrock-nova", {"bedrock": {"region": "us-east-1"}}, "amazon.nova-pro-v1:0"),
]
_EMBEDDING_PROVIDERS: list[tuple[str, dict, str]] = [
    ("openai", {"openAI": {}}, "text-embedding-3-small"),
    ("gemini", {"gemini": {}}, "gemini-embedding-001"),
    ("vertex", {"vertex": {"projectId": "p", "region": "us-east5"}}, "text-embedding-005"),
    ("bedrock-titan", {"bedrock": {"region": "us-east-1"}}, "amazon.titan-embed-text-v2:0"),
    ("bedrock-cohere", {"bedrock": {"region": "us-east-1"}}, "cohere.embed-v4:0"),
    ("bedrock-nova", {"bedrock": {"region": "us-east-1"}}, "amazon.nova-2-multimodal-embeddings-v1:0"),
]


def _route(providers: list[tuple[str, dict, str]], configured_model: bool) -> gateway.Gateway:
    routes = []
    for name, provider, model in providers:
        spec = {
            kind: {**conf, **({"model": model} if configured_model else {})}
            for kind, conf in provider.items()
        }
        routes.append(
            {
                "name": name,
                "matches": [{"path": {"pathPrefix": f"/{name}"}}],
                "backends": [{"ai": {"name": name, "provider": spec, "hostOverride": "127.0.0.1:9"}}],
                "policies": {"backendAuth": {"key": "k"}},
            }
        )
    config = {"binds": [{"port": 3000, "listeners": [{"routes": routes}]}]}
    return gateway.build(parse_text(yaml.safe_dump(config)).config)


# Providers with their model configured, so a request without one still reaches every translator.
CHAT_GATEWAY = _route(_PROVIDERS, configured_model=True)
EMBEDDINGS_GATEWAY = _route(_EMBEDDING_PROVIDERS, configured_model=True)

_ATTEMPT: dict[str, Callable[[Any, dict], egress.Attempt]] = {
    "completions": egress.chat_attempt,
    "messages": egress.messages_attempt,
    "embeddings": egress.embeddings_attempt,
}


def routes(api: str) -> list[gateway.ResolvedRoute]:
    return list((EMBEDDINGS_GATEWAY if api == "embeddings" else CHAT_GATEWAY).routes)


def through_edge(api: str, raw: bytes, route: gateway.ResolvedRoute) -> egress.Attempt:
    """Parse and validate as the router phase does, then translate for the route's provider."""
    parsed = client_request.parse_body(route, api, raw)
    (up,) = route.backends[0].upstreams
    # What the stages read before the call (shaping, limits, the usage record).
    llm = LLMRequest(api, parsed)
    _ = (llm.model, llm.stream, llm.messages, llm.tools, llm.max_tokens, llm.wants_usage_chunk)
    tokens.estimate_request_tokens(api, parsed, up.model or "m")
    attempt = _ATTEMPT[api](up, parsed)
    if attempt.body is not None:
        orjson.loads(attempt.body)  # what goes to the provider is JSON
    return attempt


def outcome(api: str, body: Any) -> list[tuple[str, GatewayError | None]]:
    """Each provider's outcome for ``body``: None (translated) or the gateway's error."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    results = []
    for route in routes(api):
        try:
            through_edge(api, raw, route)
            results.append((route.name, None))
        except GatewayError as err:
            results.append((route.name, err))
    return results
