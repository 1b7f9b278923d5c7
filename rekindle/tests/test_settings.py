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
