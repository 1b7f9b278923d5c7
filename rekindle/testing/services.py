"""A pytest plugin, loaded before Django (``-p rekindle.testing.services``), that finds the test services.

The suite runs on the machine's real PostgreSQL (127.0.0.1:5432, user postgres) and
Redis (127.0.0.1:6379). When one is not reachable: with ``CI`` set the run stops
with an error naming it; elsewhere it says what is missing, runs on SQLite and
skips the tests that need Redis.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

from rekindle.testing.ci import ON_CI

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/rekindle")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host or "127.0.0.1", int(port or default_port)


POSTGRES_AVAILABLE = _reachable(*_host_port(POSTGRES_URL, 5432))
REDIS_AVAILABLE = _reachable(*_host_port(REDIS_URL, 6379))


_missing = [
    name
    for name, ok in (("PostgreSQL at " + POSTGRES_URL, POSTGRES_AVAILABLE), ("Redis at " + REDIS_URL, REDIS_AVAILABLE))
    if not ok
]

# The tests choose their own services: nothing from a developer's .env leaks in.
for _name in (
    "REDIS_URL",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "COMFYUI_URLS",
    # One process per test run: its metrics are its own (the multiprocess tests set the folder themselves).
    "PROMETHEUS_MULTIPROC_DIR",
    "METRICS_ALLOWED_IPS",
):
    os.environ.pop(_name, None)
os.environ["DATABASE_URL"] = POSTGRES_URL if POSTGRES_AVAILABLE else "sqlite:///:memory:"
os.environ.setdefault("SECRET_KEY", "test-secret-key-for-the-test-suite-only-0123456789abcdef")
os.environ["DEBUG"] = "false"  # tests run with production behaviour
# ...except the redirect to HTTPS: the test client and live servers speak plain HTTP.
os.environ["SECURE_SSL_REDIRECT"] = "false"
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis: needs the real Redis server")
    config.addinivalue_line("markers", "postgres: needs the real PostgreSQL server")
    if _missing:
        message = "Test services missing: " + "; ".join(_missing)
        if ON_CI:
            raise pytest.UsageError(message + " (CI is set, so this is a failure, not a skip)")
        sys.stderr.write(f"\n*** {message}.\n*** Running what can run: SQLite, and no Redis tests.\n\n")
    if POSTGRES_AVAILABLE:
        # A test database of this run's own, so two runs on one server (two checkouts, a developer and CI)
        # never drop each other's database. pytest-xdist adds its _gwN suffix to this name.
        from django.conf import settings

        settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_rekindle_{os.getpid()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = []
    if not REDIS_AVAILABLE:
        skips.append(("redis", pytest.mark.skip(reason="Redis is not running at " + REDIS_URL)))
    if not POSTGRES_AVAILABLE:
        skips.append(("postgres", pytest.mark.skip(reason="PostgreSQL is not running at " + POSTGRES_URL)))
    for item in items:
        for keyword, mark in skips:
            if keyword in item.keywords:
                item.add_marker(mark)
