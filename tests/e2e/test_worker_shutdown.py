"""SIGTERM to a rundramatiq worker mid-run: the run is stopped on its node and another worker runs it at once.

Real parts: the API, Redis, two worker processes, ComfyUI stand-ins, moto's S3. The lease is
long (60 s) and no cron runs, so the attempt can only run again this soon because the stopping
worker handed it back. ``REKINDLE_BENCH_SHUTDOWN_OUT`` (used by ``bench/worker_shutdown.py``)
names a file to append the seconds from SIGTERM to the second start to; nothing asserts on them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import AttemptStatus
from rekindle.testing.comfyui_fixtures import overlapping_prompts
from rekindle.testing.factories import JobFactory
from rekindle.testing.pipeline import WorkerProcess, wait_for
from restoration.models import RestoreAttempt

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
# Grace 1 s, then the stop on the node; Dramatiq's own timeout well above both (as the README asks).
SHUTDOWN_ENV = {"WORKER_SHUTDOWN_GRACE_SECONDS": "1", "WORKER_SHUTDOWN_FORCE_SECONDS": "20", "LEASE_SECONDS": "60"}


def test_it_hands_a_running_attempt_to_another_worker_on_sigterm(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    s3_bucket: Any,
    comfy_settings: list[Any],
) -> None:
    for node in comfy_settings:
        node.set_faults(sampler_seconds=120.0)  # a run far longer than the grace period
    stopping = pipeline_worker(threads=2, shutdown_timeout_ms=60_000, **SHUTDOWN_ENV)
    job = JobFactory.create(stored_original=True)
    client = APIClient()
    client.credentials(HTTP_X_JOB_TOKEN=job.token)  # type: ignore[attr-defined]
    response = client.post(f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json")
    assert response.status_code == 202
    attempt_id = response.json()["id"]
    row = RestoreAttempt.objects.filter(pk=attempt_id)
    wait_for(lambda: row.filter(status=AttemptStatus.RUNNING).exclude(prompt_id="").exists(), what="the first run")
    first_prompt = row.get().prompt_id
    other = pipeline_worker(threads=2, shutdown_timeout_ms=60_000, **SHUTDOWN_ENV)
    for node in comfy_settings:
        node.set_faults(sampler_seconds=0.05)

    signaled = time.monotonic()
    stopping.terminate()
    # Running again, under a new prompt: the other worker took it (the stopping one takes no new message).
    wait_for(
        lambda: (
            row.filter(status__in=(AttemptStatus.RUNNING, AttemptStatus.SUCCEEDED))
            .exclude(prompt_id__in=("", first_prompt))
            .exists()
        ),
        timeout=45,
        interval=0.05,
        what="the attempt to run again on the other worker (the lease is 60 s: only a hand-back is this soon)",
    )
    restarted_after = time.monotonic() - signaled
    wait_for(lambda: row.filter(status=AttemptStatus.SUCCEEDED).exists(), timeout=120, what="the attempt to succeed")
    assert stopping.process is not None
    stopping.process.wait(timeout=60)

    attempt = row.get()
    # Two claims, one try spent: the stopped one was given back.
    assert (attempt.tries, attempt.tries_at_requeue) == (2, 1)
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]
    assert "handed back to the queue" in stopping.log()
    # Nothing ran there after: the one line naming the attempt is the run's own last word, "released".
    later_lines = stopping.log().split("handed back to the queue")[-1].splitlines()[1:]
    after = [line for line in later_lines if attempt_id in line]
    assert len(after) == 1
    assert '"outcome": "released"' in after[0]
    assert overlapping_prompts(comfy_settings) == []
    assert other.process is not None
    assert other.process.poll() is None  # the other worker kept running
    out = os.environ.get("REKINDLE_BENCH_SHUTDOWN_OUT")
    if out:
        with open(out, "a") as handle:
            handle.write(f"{restarted_after:.3f}\n")
