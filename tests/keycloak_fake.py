"""Keycloak, as far as a gateway sees it: tokens in Keycloak's shape signed by test RSA and EC
keys, and a JWKS endpoint (``/realms/<realm>/protocol/openid-connect/certs``) served over HTTP
from a thread. Tests cannot run Keycloak; this is what its tokens and key sets look like."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from extproc.ports import free_port

CLIENT_ID = "openweb-ui"
AUDIENCE = "llm-gateway"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        """The public key as Keycloak lists it in its certs endpoint."""
        algo = RSAAlgorithm if self.alg.startswith(("RS", "PS")) else ECAlgorithm
        out = algo.to_jwk(self.public, as_dict=True)
        return {"kid": self.kid, "alg": self.alg, "use": "sig", **out}

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def encryption_jwk(kid: str = "enc-key") -> dict[str, Any]:
    """Keycloak's JWKS also lists an RSA-OAEP key for encryption: a verifier must skip it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "kid": kid,
        "alg": "RSA-OAEP",
        "use": "enc",
        **RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
    }


def jwks(*keys: SigningKey, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys] + list(extra or [])}


def claims(
    issuer: str,
    username: str = "alice",
    groups: list[str] | None = None,
    roles: list[str] | None = None,
    lifetime: int = 300,
    **extra: Any,
) -> dict[str, Any]:
    """An access token's claims as Keycloak issues them (password grant, groups and audience mappers)."""
    now = int(time.time())
    body: dict[str, Any] = {
        "exp": now + lifetime,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "aud": [AUDIENCE, "account"],
        "sub": str(uuid.uuid5(uuid.NAMESPACE_DNS, username)),
        "typ": "Bearer",
        "azp": CLIENT_ID,
        "sid": str(uuid.uuid4()),
        "acr": "1",
        "realm_access": {
            "roles": roles or ["default-roles-mcp-realm", "offline_access", "uma_authorization"]
        },
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "scope": "openid profile email",
        "email_verified": True,
        "name": f"{username.title()} Example",
        "preferred_username": username,
        "given_name": username.title(),
        "family_name": "Example",
        "email": f"{username}@example.com",
        "groups": groups if groups is not None else ["/engineering"],
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def sign(key: SigningKey, body: dict[str, Any], alg: str | None = None, **header: Any) -> str:
    headers = {"kid": key.kid, "typ": "JWT", **header}
    return jwt.encode(body, key.private, algorithm=alg or key.alg, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], body: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"


def unsigned(body: dict[str, Any], kid: str | None = None) -> str:
    """``alg: none``: no signature at all."""
    header: dict[str, Any] = {"alg": "none", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return _segments(header, body) + "."


def hs256_with_public_key(key: SigningKey, body: dict[str, Any]) -> str:
    """The classic confusion attack: HMAC-SHA256 keyed with the RSA public key's PEM, which a
    verifier that lets the token pick its algorithm would accept (pyjwt refuses to make one)."""
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, body)
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@dataclass
class _Realm:
    body: bytes = b'{"keys": []}'
    down: bool = False  # drop connections, as an IdP that is not there
    truncate: bool = False  # promise more than is sent: a key set changing mid-load
    delay: float = 0.0  # answer this late: a slow IdP
    hits: int = 0


@dataclass
class FakeKeycloak:
    """Realms' JWKS over HTTP on 127.0.0.1, changeable while the gateway runs."""

    port: int = field(default_factory=free_port)
    realms: dict[str, _Realm] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.split("/")
                realm = fake.realms.get(parts[2]) if len(parts) > 2 and parts[1] == "realms" else None
                if realm is None or not self.path.endswith("/protocol/openid-connect/certs"):
                    self.send_error(404)
                    return
                realm.hits += 1
                time.sleep(realm.delay)
                if realm.down:
                    self.close_connection = True
                    self.connection.shutdown(2)  # no answer: a refused/reset fetch
                    return
                body = realm.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if realm.truncate else body)
                if realm.truncate:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def issuer(self, realm: str = "mcp-realm") -> str:
        return f"http://127.0.0.1:{self.port}/realms/{realm}"

    def certs_url(self, realm: str = "mcp-realm") -> str:
        return f"{self.issuer(realm)}/protocol/openid-connect/certs"

    def realm(self, name: str = "mcp-realm") -> _Realm:
        return self.realms.setdefault(name, _Realm())

    def serve(self, realm: str, *keys: SigningKey, extra: list[dict[str, Any]] | None = None) -> None:
        self.realm(realm).body = json.dumps(jwks(*keys, extra=extra)).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
