"""Settings read from the environment: defaults, parsing, and loud failures naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from rekindle.env import env_bool, env_int, env_list, env_raw, env_url

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_typed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_INT", "25_000")
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_LIST", "a.example, b.example,,")
    assert env_int("X_INT", 1) == 25000
    assert env_bool("X_BOOL", False) is True
    assert env_list("X_LIST") == ["a.example", "b.example"]
    assert env_int("X_ABSENT", 7) == 7


def test_it_names_the_variable_on_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_URL", "ftp://example")
    with pytest.raises(ImproperlyConfigured, match="X_URL"):
        env_url("X_URL", schemes=("http", "https"))


def test_it_reads_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.delenv("X_SECRET", raising=False)
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_raw("X_SECRET") == "s3cr3t"


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "REKINDLE_VAR_DIR": "/tmp/rekindle-settings-test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off() -> None:
    result = _check({"DEBUG": "false"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_it_stops_start_up_naming_a_malformed_variable() -> None:
    result = _check({"DEBUG": "true", "UPLOAD_MAX_BYTES": "lots"})
    assert result.returncode != 0
    assert "UPLOAD_MAX_BYTES must be an integer" in result.stderr


def test_it_starts_on_embedded_defaults() -> None:
    result = _check({"DEBUG": "true"})
    assert result.returncode == 0, result.stderr


def _setting(env: dict[str, str], name: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "LOG_FORMAT", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from django.conf import settings; print(settings.{name})"],
        cwd=ROOT,
        env={**clean, "REKINDLE_VAR_DIR": "/tmp/rekindle-settings-test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_it_logs_readable_lines_in_development_and_json_otherwise() -> None:
    assert _setting({"DEBUG": "true"}, "LOG_FORMAT") == "console"
    assert _setting({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "LOG_FORMAT") == "json"
    assert _setting({"DEBUG": "true", "LOG_FORMAT": "JSON"}, "LOG_FORMAT") == "json"
    result = _check({"DEBUG": "true", "LOG_FORMAT": "xml"})
    assert result.returncode != 0
    assert "LOG_FORMAT must be one of json, console" in result.stderr
    result = _check({"DEBUG": "true", "SENTRY_TRACES_SAMPLE_RATE": "2"})
    assert result.returncode != 0
    assert "SENTRY_TRACES_SAMPLE_RATE must be between 0 and 1" in result.stderr


# Two request-like transactions on the embedded SQLite database, each reading before it writes.
# The first waits (up to a few seconds) for the second to have read, then both write.
_SQLITE_CONTENTION = """
import threading
import django
from django.db import connection, transaction

django.setup()
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS counter (value INTEGER)")
    cursor.execute("INSERT INTO counter VALUES (0)")
first_read, second_read = threading.Event(), threading.Event()
errors = []

def first():
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT value FROM counter")
            first_read.set()
            second_read.wait(3)
            cursor.execute("UPDATE counter SET value = value + 1")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        first_read.set()
        connection.close()

def second():
    first_read.wait()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            second_read.set()
            cursor.execute("SELECT value FROM counter")
            cursor.execute("UPDATE counter SET value = value + 1")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        second_read.set()
        connection.close()

threads = [threading.Thread(target=first), threading.Thread(target=second)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT value FROM counter")
    print(errors, cursor.fetchone()[0])
"""


def test_it_makes_concurrent_writers_wait_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL")}
    env = {
        **clean,
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        "DEBUG": "true",
        "REKINDLE_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", _SQLITE_CONTENTION], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] 2"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_it_answers_health_checks_over_plain_http_when_https_is_enforced(path: str) -> None:
    from django.conf import settings
    from django.http import HttpResponse, HttpResponseBase
    from django.middleware.security import SecurityMiddleware
    from django.test import RequestFactory, override_settings

    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_REDIRECT_EXEMPT=settings.SECURE_REDIRECT_EXEMPT):
        middleware = SecurityMiddleware(lambda request: HttpResponse("ok"))
        health, near_miss, api = (
            middleware(RequestFactory().get(url)) for url in (path, f"{path}-not", "/api/v1/jobs")
        )
    assert isinstance(health, HttpResponseBase)
    assert isinstance(near_miss, HttpResponseBase)
    assert isinstance(api, HttpResponseBase)

    assert health.status_code == 200
    assert near_miss.status_code == 301
    assert api.status_code == 301
    assert api["Location"].startswith("https://")
