"""manage.py gives every process it starts (the rundramatiq worker above all) a short idle poll ceiling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What the worker's dramatiq process sees: rundramatiq execs it with manage.py's environment.
PROBE = "import dramatiq.worker as w; print(w.WORKER_TIMEOUT)"


def _worker_timeout_seen(**env: str) -> int:
    base = {key: value for key, value in os.environ.items() if key.lower() != "dramatiq_worker_timeout"}
    base.pop("DRAMATIQ_WORKER_TIMEOUT", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-startup", "-c", PROBE],
        cwd=ROOT,
        env={**base, "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 100),
        ({"DRAMATIQ_WORKER_TIMEOUT": "250"}, 250),
        ({"dramatiq_worker_timeout": "30", "DRAMATIQ_WORKER_TIMEOUT": "250"}, 30),
    ],
)
def test_it_sets_the_worker_poll_ceiling_unless_the_environment_does(env: dict[str, str], expected: int) -> None:
    assert _worker_timeout_seen(**env) == expected
