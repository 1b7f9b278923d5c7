"""Seconds from SIGTERM to a worker mid-run until its attempt runs again on another worker.

Runs the end-to-end test ``tests/e2e/test_worker_shutdown.py`` (real rundramatiq workers on
Redis, ComfyUI stand-ins, moto's S3, PostgreSQL) ``--runs`` times; each run appends its figure
to a file this script reads. The grace period there is 1 s (``WORKER_SHUTDOWN_GRACE_SECONDS``),
so the figure is the grace plus what the hand-back costs: the heartbeat noticing the end of
the grace (at most a second), stopping the prompt on its node, the release, the new message,
and the other worker's claim and submission.

    .venv/bin/python bench/worker_shutdown.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figures.txt"
        env = {**os.environ, "REKINDLE_BENCH_SHUTDOWN_OUT": str(out)}
        for run in range(args.runs):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/e2e/test_worker_shutdown.py",
                    "-q",
                    "-n",
                    "0",
                    "-p",
                    "no:cacheprovider",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.exit(f"run {run + 1} failed:\n{done.stdout[-3000:]}")
        figures = [float(line) for line in out.read_text().split()]
    print(f"SIGTERM -> running again on another worker, grace 1 s, {len(figures)} runs:")
    print("  " + ", ".join(f"{value:.2f}" for value in figures) + " s")
    print(f"  median {statistics.median(figures):.2f} s, max {max(figures):.2f} s")


if __name__ == "__main__":
    main()
