"""Billing's settings: keys and secrets of the right kind, a price that makes sense, or start-up stops naming them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "DEBUG": "true", "REKINDLE_VAR_DIR": "/tmp/rekindle-settings-test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_SECRET_KEY": "pk_live_123"}, "STRIPE_SECRET_KEY must be a secret or restricted key"),
        ({"STRIPE_WEBHOOK_SECRET": "we_123"}, "STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret"),
        ({"STRIPE_HD_CURRENCY": "dollars"}, "STRIPE_HD_CURRENCY must be a three-letter currency code"),
        ({"STRIPE_HD_AMOUNT": "0"}, "STRIPE_HD_AMOUNT must be at least 1"),
        ({"STRIPE_CHECKOUT_MINUTES": "2000"}, "STRIPE_CHECKOUT_MINUTES must be at most 1440"),
    ],
)
def test_it_stops_start_up_on_a_wrong_stripe_setting(env: dict[str, str], message: str) -> None:
    result = _check(env)

    assert result.returncode != 0
    assert message in result.stderr


def test_it_starts_with_payments_on() -> None:
    result = _check({"STRIPE_SECRET_KEY": "sk_test_" + "a" * 24, "STRIPE_WEBHOOK_SECRET": "whsec_abc"})

    assert result.returncode == 0, result.stderr
