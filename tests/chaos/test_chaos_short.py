"""The short chaos run: ``bench/chaos.py --short --seed 1`` on its own stack, failing on any ledger violation.

Some dozens of jobs through the HTTP API while each fault of the schedule strikes once (workers
killed and stopped, Redis and PostgreSQL down and back, a stand-in killed, the stand-ins' own
faults, S3 errors and slowness, a delete while an attempt runs). The ledger is printed whatever
the outcome; every violation it shows fails the test, named one per line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rekindle.testing import chaos_ledger

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("REKINDLE_ARTIFACTS", ROOT / "var" / "artifacts")) / "chaos"


def test_it_keeps_every_promise_of_the_ledger_under_the_short_seeded_run(tmp_path: Path) -> None:
    for binary in ("initdb", "pg_ctl", "redis-server"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not on PATH: the chaos run starts PostgreSQL and Redis of its own")
    ledger_path = tmp_path / "ledger.json"
    result = subprocess.run(
        [sys.executable, "bench/chaos.py", "--short", "--seed", "1", "--json", str(ledger_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert ledger_path.exists(), (
        f"the run wrote no ledger (exit {result.returncode}):\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"
    )
    ledger = json.loads(ledger_path.read_text())
    # Kept after the run, for whoever reads a failure.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ledger-short-seed1.json").write_text(ledger_path.read_text())
    print()
    print(chaos_ledger.render(ledger))

    assert chaos_ledger.violations(ledger) == []
    assert result.returncode == 0, result.stderr[-4000:]
