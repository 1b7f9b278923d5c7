"""`manage.py check --deploy` runs clean with the production environment of .env.example."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> dict[str, str]:
    """The uncommented NAME=value lines of .env.example."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A clean environment: only .env.example's settings, not the test suite's.
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_reads_a_production_environment_from_env_example() -> None:
    values = env_example()

    assert values["DEBUG"] == "false"
    assert values["CSRF_TRUSTED_ORIGINS"].startswith("https://")
    assert "AUTH0_AUDIENCE" in values


def test_it_passes_the_deploy_check_with_the_env_example(tmp_path: Path) -> None:
    env = {
        **env_example(),
        # The example's placeholder stands for a secret nobody commits.
        "SECRET_KEY": secrets.token_urlsafe(64),
        "REKINDLE_VAR_DIR": str(tmp_path),
    }

    result = _run("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_it_fails_the_deploy_check_when_https_is_switched_off(tmp_path: Path) -> None:
    env = {
        **env_example(),
        "SECRET_KEY": secrets.token_urlsafe(64),
        "REKINDLE_VAR_DIR": str(tmp_path),
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
    }

    result = _run("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout
    assert "security.W008" in result.stderr + result.stdout


def test_it_turns_on_auth0_login_only_when_configured(tmp_path: Path) -> None:
    script = "from django.conf import settings; print(settings.AUTHENTICATION_BACKENDS, settings.AUTH0_API_ENABLED)"
    env = {"DEBUG": "true", "REKINDLE_VAR_DIR": str(tmp_path)}

    without = _run("shell", "--no-imports", "-c", script, env=env)
    auth0 = {name: value for name, value in env_example().items() if name.startswith("AUTH0_")}
    with_auth0 = _run("shell", "--no-imports", "-c", script, env={**env, **auth0})

    assert without.stdout.strip() == "['django.contrib.auth.backends.ModelBackend'] False", without.stderr
    assert with_auth0.stdout.strip() == (
        "['social_core.backends.auth0.Auth0OAuth2', 'django.contrib.auth.backends.ModelBackend'] True"
    ), with_auth0.stderr
