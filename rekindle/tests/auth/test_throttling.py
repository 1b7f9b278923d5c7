"""Rate limits per client address and per user, counted in the real Redis (and in-process without it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from rekindle.testing.auth0 import Auth0Tenant, bearer
from rekindle.testing.services import REDIS_URL
from rekindle.throttling import ScopedRateThrottle, parse_rate, throttles_for

pytestmark = [pytest.mark.django_db, pytest.mark.urls("rekindle.tests.auth.throttle_urls")]

# The start of a minute, an hour and a day: the windows tests count in.
START = 86400.0 * 20000


def _caches(throttle: dict[str, Any]) -> dict[str, Any]:
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, "throttle": throttle}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [START + 10]
    monkeypatch.setattr(ScopedRateThrottle, "clock", lambda: now[0])
    return now


@pytest.fixture
def redis_throttle_cache(settings: Any) -> Iterator[str]:
    """The throttle cache on the real Redis, under a prefix of its own; its keys are removed after."""
    prefix = f"test-throttle-{uuid.uuid4().hex}"
    settings.CACHES = _caches(
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": prefix}
    )
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def rates(settings: Any) -> dict[str, str | None]:
    settings.THROTTLE_RATES = {
        "upload_ip": "3/minute",
        "upload_user": "2/hour",
        "restore_ip": "100/hour",
        "restore_user": "1/day",
        "animate_ip": None,
        "animate_user": None,
    }
    return settings.THROTTLE_RATES  # type: ignore[no-any-return]


def _assert_throttled(response: Any, retry_after: int) -> None:
    assert response.status_code == 429, response.content
    assert response.headers["Retry-After"] == str(retry_after)
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert error["details"] == {"retry_after_seconds": retry_after}


@pytest.mark.redis
def test_it_limits_an_address_and_resets_in_the_next_window(
    redis_throttle_cache: str, rates: Any, clock: list[float]
) -> None:
    client = APIClient()
    for _ in range(3):
        assert client.post("/upload").status_code == 201

    _assert_throttled(client.post("/upload"), retry_after=50)
    clock[0] += 49
    _assert_throttled(client.post("/upload"), retry_after=1)

    clock[0] += 1
    assert client.post("/upload").status_code == 201
    keys = redis.Redis.from_url(REDIS_URL).keys(f"{redis_throttle_cache}:*")
    assert keys, "the counts live in Redis"


@pytest.mark.redis
def test_it_counts_each_address_apart(redis_throttle_cache: str, rates: Any, clock: list[float], settings: Any) -> None:
    # One proxy in front: the client's address is the last X-Forwarded-For entry.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    for _ in range(3):
        assert client.post("/upload", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 201
    assert client.post("/upload", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    # A forged first entry does not buy a fresh allowance.
    assert client.post("/upload", HTTP_X_FORWARDED_FOR="10.0.0.1, 198.51.100.7").status_code == 429

    assert client.post("/upload", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 201


@pytest.mark.redis
def test_it_limits_each_signed_in_user(
    redis_throttle_cache: str, rates: Any, clock: list[float], auth0_tenant: Auth0Tenant, settings: Any
) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    alice = bearer(auth0_tenant.token(sub="auth0|alice"))
    bob = bearer(auth0_tenant.token(sub="auth0|bob"))

    # Alice's two uploads an hour hold wherever she comes from.
    assert client.post("/upload", headers=alice, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 201
    assert client.post("/upload", headers=alice, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 201
    _assert_throttled(client.post("/upload", headers=alice, HTTP_X_FORWARDED_FOR="198.51.100.3"), 3590)

    assert client.post("/upload", headers=bob, HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 201

    clock[0] += 3600
    assert client.post("/upload", headers=alice, HTTP_X_FORWARDED_FOR="198.51.100.5").status_code == 201


@pytest.mark.redis
def test_it_counts_signed_in_requests_against_their_address_too(
    redis_throttle_cache: str, rates: Any, clock: list[float], auth0_tenant: Auth0Tenant
) -> None:
    client = APIClient()
    for person in ("auth0|a", "auth0|b", "auth0|c"):
        assert client.post("/upload", headers=bearer(auth0_tenant.token(sub=person))).status_code == 201

    assert client.post("/upload", headers=bearer(auth0_tenant.token(sub="auth0|d"))).status_code == 429


@pytest.mark.redis
def test_it_throttles_function_views_by_their_scope(
    redis_throttle_cache: str, rates: Any, clock: list[float], auth0_tenant: Auth0Tenant
) -> None:
    client = APIClient()
    token = bearer(auth0_tenant.token())
    assert client.post("/restore", headers=token).status_code == 202

    _assert_throttled(client.post("/restore", headers=token), retry_after=86390)
    # Another scope keeps its own count.
    assert client.post("/upload", headers=token).status_code == 201


def test_it_counts_in_process_without_redis(rates: Any, clock: list[float], settings: Any) -> None:
    settings.CACHES = _caches({"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"})
    client = APIClient()
    for _ in range(3):
        assert client.post("/upload").status_code == 201
    assert client.post("/upload").status_code == 429


def test_it_leaves_views_without_a_scope_and_disabled_rates_alone(
    rates: Any, clock: list[float], settings: Any
) -> None:
    settings.THROTTLE_RATES = {**rates, "upload_ip": None, "upload_user": None}
    client = APIClient()
    for _ in range(10):
        assert client.post("/free").status_code == 200
        assert client.post("/upload").status_code == 201


def test_it_lets_requests_through_when_the_cache_is_down(rates: Any, clock: list[float], settings: Any) -> None:
    # Nothing listens on port 1: every count fails, and the API keeps answering.
    settings.CACHES = _caches(
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    )
    client = APIClient()
    for _ in range(5):
        assert client.post("/upload").status_code == 201


def test_it_parses_rates_and_refuses_unknown_scopes() -> None:
    assert parse_rate("20/hour") == (20, 3600)
    assert parse_rate("5/s") == (5, 1)
    assert parse_rate("100/day") == (100, 86400)
    with pytest.raises(ImproperlyConfigured, match="upload"):
        throttles_for("uplaod")
