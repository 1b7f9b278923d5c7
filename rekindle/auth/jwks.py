"""The Auth0 tenant's signing keys (JWKS), fetched over HTTPS and cached in the process.

Keys are looked up by ``kid``. A ``kid`` we have not seen triggers a refetch (key
rotation), but at most once per ``refetch_interval`` so a stream of tokens with
made-up ``kid`` values cannot turn us into a load generator against Auth0. A
failed fetch is retried sooner (``retry_after_failure``). Keys older than
``max_age`` are refreshed on the next lookup; when that refresh fails the keys we
have are kept, because a JWKS outage should not sign everyone out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import requests

logger = logging.getLogger(__name__)


def _now() -> float:
    return time.monotonic()


class JwksUnavailable(Exception):
    """The key set could not be fetched and no usable copy is cached."""


class UnknownSigningKey(Exception):
    """The token names a ``kid`` that the tenant's key set does not hold."""


def parse_signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The RS256 signing keys of a JWKS document, by ``kid``; other keys are ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[kid] = jwt.PyJWK.from_dict(entry, algorithm="RS256")
        except jwt.PyJWTError:
            logger.warning("JWKS key %s cannot be parsed; skipping it", kid)
    return keys


class JwksClient:
    """A thread-safe cache of one JWKS URL's signing keys."""

    def __init__(
        self,
        url: str,
        *,
        refetch_interval: float = 60.0,
        retry_after_failure: float = 5.0,
        max_age: float = 3600.0,
        timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url
        self.refetch_interval = refetch_interval
        self.retry_after_failure = retry_after_failure
        self.max_age = max_age
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._next_fetch_allowed_at = float("-inf")

    def signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock() if self._clock is not None else _now()
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age
            unknown = kid not in self._keys
            if (stale or unknown) and now >= self._next_fetch_allowed_at:
                self._fetch(now)
            elif self._fetched_at is None:
                raise JwksUnavailable(f"the key set at {self.url} could not be fetched recently")
            key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        return key

    def _fetch(self, now: float) -> None:
        try:
            response = requests.get(self.url, timeout=self.timeout, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = parse_signing_keys(response.json())
        except (requests.RequestException, ValueError) as exc:
            self._next_fetch_allowed_at = now + self.retry_after_failure
            if self._fetched_at is None:
                logger.error("Fetching the JWKS at %s failed: %s", self.url, exc)
                raise JwksUnavailable(f"the key set at {self.url} could not be fetched: {exc}") from exc
            logger.warning("Refreshing the JWKS at %s failed, keeping the cached keys: %s", self.url, exc)
            return
        self._keys = keys
        self._fetched_at = now
        self._next_fetch_allowed_at = now + self.refetch_interval
        logger.info("Fetched the JWKS at %s: %d signing key(s)", self.url, len(keys))


_clients: dict[tuple[str, float, float, float], JwksClient] = {}
_clients_lock = threading.Lock()


def jwks_client(url: str, *, refetch_interval: float, max_age: float, timeout: float) -> JwksClient:
    """The process-wide client for ``url``, so every request shares one cache."""
    key = (url, refetch_interval, max_age, timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = JwksClient(
                url, refetch_interval=refetch_interval, max_age=max_age, timeout=timeout
            )
        return client


def forget_jwks_clients() -> None:
    """Drop every cached key set (tests start each case from an empty cache)."""
    with _clients_lock:
        _clients.clear()
