"""Heavy steps in a bounded child process: results and errors come back, bounds end the step, memory goes back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rekindle.bounded import BoundExceeded, run_bounded
from rekindle.errors import Unavailable

MB = 1024 * 1024


def double(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * MB)
    return len(block)


def nap(seconds: float) -> None:
    time.sleep(seconds)


def refuse() -> None:
    raise Unavailable("down for now", code="provider_down", details={"where": "child"}, retry_after=7)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_it_returns_what_the_step_returns_from_another_process() -> None:
    pid, value = run_bounded(double, 21, seconds=10, memory_bytes=256 * MB)
    assert value == 42
    assert pid != os.getpid()


def test_it_brings_a_service_error_back_whole() -> None:
    with pytest.raises(Unavailable) as raised:
        run_bounded(refuse, seconds=10, memory_bytes=256 * MB)
    error = raised.value
    assert (error.code, error.message, error.details, error.retry_after) == (
        "provider_down",
        "down for now",
        {"where": "child"},
        7,
    )


def test_it_ends_a_step_that_wants_more_memory_than_its_bound() -> None:
    assert run_bounded(allocate, 64, seconds=10, memory_bytes=256 * MB) == 64 * MB
    with pytest.raises(BoundExceeded) as raised:
        run_bounded(allocate, 512, seconds=10, memory_bytes=128 * MB)
    assert raised.value.bound == "memory"


def test_it_ends_a_step_that_runs_past_its_time() -> None:
    started = time.monotonic()
    with pytest.raises(BoundExceeded) as raised:
        run_bounded(nap, 120, seconds=0.5, memory_bytes=256 * MB)
    assert raised.value.bound == "time"
    assert time.monotonic() - started < 60


def test_it_reports_a_step_whose_process_died() -> None:
    with pytest.raises(BoundExceeded) as raised:
        run_bounded(die, seconds=10, memory_bytes=256 * MB)
    assert raised.value.bound == "crashed"


def test_it_gives_back_what_a_large_run_in_a_worker_thread_freed() -> None:
    # A 32 MP restore at 4 MP in a thread, in a process of its own. Without giving the memory back, the
    # thread's malloc arena keeps about 380 MB of it for the life of the process.
    probe = subprocess.run(
        [sys.executable, "-m", "rekindle.testing.memory_probe", "32", "trim"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    before, after = (int(value) for value in probe.stdout.split()[-2:])
    assert after - before < 120, probe.stdout
