"""A stand-in Auth0 tenant for tests: RSA keys made here, a JWKS served over real HTTP on loopback, tokens signed here.

Nothing reaches Auth0. ``Auth0Tenant.token()`` mints access tokens the way Auth0
does (RS256, ``kid`` in the header, ``iss``/``aud``/``sub``/``exp``); keyword
arguments override or drop claims and header fields to make broken ones.

The ``auth0_tenant`` fixture points the settings at the tenant and starts each
test with an empty key cache; the root conftest registers this module as a plugin,
so every test can ask for it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from rekindle.auth.jwks import forget_jwks_clients

ISSUER = "https://rekindle-test.eu.auth0.com/"
AUDIENCE = "https://api.rekindle.test"
_UNSET: Any = object()


@functools.cache
def rsa_key(index: int) -> rsa.RSAPrivateKey:
    """The index-th test key; made once per test run because RSA generation is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Auth0Tenant:
    """Signing keys, the JWKS server that publishes them, and a token minter."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {"key-1": rsa_key(0)}
        self.available = True
        self.fetches = 0
        self._lock = threading.Lock()
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with tenant._lock:
                    tenant.fetches += 1
                    body = json.dumps(tenant.jwks()).encode()
                    available = tenant.available
                if self.path != "/.well-known/jwks.json" or not available:
                    self.send_response(404 if available else 503)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for one poll.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.jwks_url = f"http://{host!s}:{port}/.well-known/jwks.json"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key, kid) for kid, key in self.keys.items()]}

    def rotate_in(self, kid: str, index: int) -> None:
        """Publish a new signing key, as Auth0 does when keys rotate."""
        with self._lock:
            self.keys[kid] = rsa_key(index)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": [AUDIENCE, ISSUER + "userinfo"],
            "sub": "auth0|alice",
            "iat": now,
            "exp": now + 3600,
            "scope": "openid profile email",
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, *, kid: str = "key-1", key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        """An RS256 access token; ``key`` signs with a key the JWKS may not hold."""
        signing_key = key if key is not None else self.keys[kid]
        return jwt.encode(self.claims(**claims), signing_key, algorithm="RS256", headers={"kid": kid})

    def token_for(self, subject: str, **claims: Any) -> str:
        return self.token(sub=subject, **claims)

    def unsigned_token(self, **claims: Any) -> str:
        """``alg: none``: no signature at all."""
        header = {"alg": "none", "typ": "JWT", "kid": "key-1"}
        return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}."

    def hs256_with_public_key(self, kid: str = "key-1", **claims: Any) -> str:
        """The key-confusion attack: HS256 with the tenant's public key (PEM) as the HMAC secret."""
        secret = (
            self.keys[kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def auth0_tenant(settings: Any) -> Iterator[Auth0Tenant]:
    """A local Auth0 tenant, with the API's settings pointing at it."""
    tenant = Auth0Tenant()
    settings.AUTH0_API_ENABLED = True
    settings.AUTH0_JWKS_URL = tenant.jwks_url
    settings.AUTH0_ISSUER = ISSUER
    settings.AUTH0_AUDIENCE = AUDIENCE
    settings.AUTH0_LEEWAY_SECONDS = 30
    settings.AUTH0_EMAIL_CLAIM = "https://rekindle.example/email"
    forget_jwks_clients()
    try:
        yield tenant
    finally:
        forget_jwks_clients()
        tenant.close()


def bearer(token: str) -> dict[str, str]:
    """Headers for the test client: ``client.get(url, headers=bearer(token))``."""
    return {"Authorization": f"Bearer {token}"}
