"""A real, minimal OpenID Connect provider for tests: RSA keys, a JWKS and a discovery
document served over HTTP on 127.0.0.1, and PyJWT-signed access tokens."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "modelyard"
REALM_PATH = "/realms/modelyard"
DISCOVERY_PATH = f"{REALM_PATH}/.well-known/openid-configuration"
JWKS_PATH = f"{REALM_PATH}/protocol/openid-connect/certs"

_UNSET: Any = object()


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key per ``name``, generated once per test session (it takes ~30 ms)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def closed_port_url(path: str = "/") -> str:
    """An http URL on a loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class IdentityProvider:
    """Publishes ``keys`` (kid -> private key; only the public halves leave) as a JWKS.

    The issuer is ``http://127.0.0.1:<port>/realms/modelyard``; its discovery document
    lives under the issuer at ``/.well-known/openid-configuration``.
    """

    def __init__(self) -> None:
        self.kid = "key-1"
        self.keys: dict[str, rsa.RSAPrivateKey] = {self.kid: rsa_key("provider")}
        self.hits: Counter[str] = Counter()
        self.discovery_override: dict[str, Any] | None = None
        self.jwks_body_override: bytes | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.issuer = self.base_url + REALM_PATH
        self.jwks_url = self.base_url + JWKS_PATH
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    # -- the HTTP side -------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private_key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        if self.discovery_override is not None:
            return self.discovery_override
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits[self.path] += 1
                if self.path == DISCOVERY_PATH:
                    self._send_json(provider.discovery())
                elif self.path == JWKS_PATH and provider.jwks_body_override is not None:
                    self._send(provider.jwks_body_override)
                elif self.path == JWKS_PATH:
                    self._send_json(provider.jwks())
                else:
                    self.send_error(404)

            def _send_json(self, body: dict[str, Any]) -> None:
                self._send(json.dumps(body).encode())

            def _send(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- tokens --------------------------------------------------------------------------

    def claims(
        self,
        subject: str = "sub-alice",
        *,
        username: str | None = "alice",
        email: str | None = "alice@example.com",
        groups: Any = (),
        audience: Any = AUDIENCE,
        issuer: str | None = None,
        expires_in: int = 300,
        **extra: Any,
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + expires_in,
            "groups": list(groups) if isinstance(groups, tuple | list) else groups,
        }
        if username is not None:
            claims["preferred_username"] = username
        if email is not None:
            claims["email"] = email
        claims.update(extra)
        return claims

    def token(
        self,
        subject: str = "sub-alice",
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = _UNSET,
        drop: tuple[str, ...] = (),
        **claim_args: Any,
    ) -> str:
        """An RS256 token; ``key`` defaults to the published key, ``kid`` to its id.

        ``drop`` removes claims after they are built (e.g. ``("exp",)``); ``kid=None``
        leaves the header without a key id.
        """
        claims = self.claims(subject, **claim_args)
        for name in drop:
            claims.pop(name, None)
        key_id = self.kid if kid is _UNSET else kid
        headers = {"kid": key_id} if key_id is not None else {}
        return jwt.encode(claims, key or self.keys[self.kid], algorithm="RS256", headers=headers)


@contextmanager
def running_identity_provider() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    """A running identity provider of this test's own."""
    with running_identity_provider() as provider:
        yield provider


# -- tokens that must be refused, with the code each gets --------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(provider: IdentityProvider) -> str:
    """The classic key-confusion forgery: HMAC-signed with the provider's public key.

    PyJWT refuses to produce this token, so it is assembled by hand.
    """
    pem = (
        provider.keys[provider.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider.kid}).encode())
    payload = _b64(json.dumps(provider.claims()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def with_header(token: str, header: dict[str, Any]) -> str:
    """``token`` with its header replaced (payload and signature kept)."""
    _, payload, signature = token.split(".")
    return f"{_b64(json.dumps(header).encode())}.{payload}.{signature}"


TokenMaker = Callable[[IdentityProvider], str]

REFUSED: list[Any] = [
    pytest.param(lambda p: p.token(expires_in=-3600), "auth/token_expired", id="expired"),
    pytest.param(lambda p: p.token(audience="other-app"), "auth/invalid_audience", id="audience"),
    pytest.param(
        lambda p: p.token(issuer="https://evil.example/realms/x"),
        "auth/invalid_issuer",
        id="issuer",
    ),
    pytest.param(
        lambda p: p.token(key=rsa_key("attacker")),
        "auth/invalid_signature",
        id="other-key-same-kid",
    ),
    pytest.param(
        lambda p: p.token(key=rsa_key("attacker"), kid="key-unknown"),
        "auth/invalid_token",
        id="kid",
    ),
    pytest.param(lambda p: p.token(kid=None), "auth/invalid_token", id="no-kid"),
    pytest.param(lambda p: p.token(drop=("exp",)), "auth/invalid_token", id="no-exp"),
    pytest.param(lambda p: p.token(drop=("sub",)), "auth/invalid_token", id="no-sub"),
    pytest.param(lambda p: p.token(drop=("aud",)), "auth/invalid_token", id="no-aud"),
    pytest.param(
        lambda p: p.token(nbf=int(p.claims()["iat"]) + 3600), "auth/invalid_token", id="nbf"
    ),
    pytest.param(
        lambda p: jwt.encode(p.claims(), None, algorithm="none", headers={"kid": p.kid}),
        "auth/invalid_token",
        id="alg-none",
    ),
    pytest.param(
        lambda p: with_header(p.token(), {"alg": "none", "typ": "JWT", "kid": p.kid}),
        "auth/invalid_token",
        id="alg-none-keeps-signature",
    ),
    pytest.param(hs256_with_public_key, "auth/invalid_token", id="hs256-key-confusion"),
    pytest.param(lambda p: "a.b.c", "auth/invalid_token", id="garbage"),
    pytest.param(
        lambda p: p.token()[:-8] + "AAAAAAAA", "auth/invalid_signature", id="tampered-signature"
    ),
]
