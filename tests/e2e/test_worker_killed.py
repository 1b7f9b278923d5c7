"""A worker killed with kill -9 mid-run: the next worker takes its attempt back at once and fetches what the node made.

Real parts as in ``test_e2e_pipeline``: ``rundramatiq`` processes on pytest's PostgreSQL test
database, the machine's Redis under a namespace of the test's own, moto's S3, two ComfyUI
stand-ins. The lease is ten minutes, so an attempt that comes back within the test's wait
came back because its worker was seen to be gone, not because its lease ran out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import AttemptStatus
from rekindle.testing.factories import JobFactory
from rekindle.testing.pipeline import WorkerProcess, wait_for
from restoration.models import RestoreAttempt

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
LONG_LEASE = "600"


def _start_restore() -> RestoreAttempt:
    job = JobFactory.create(stored_original=True)
    client = APIClient()
    client.credentials(HTTP_X_JOB_TOKEN=job.token)  # type: ignore[attr-defined]
    response = client.post(f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json")
    assert response.status_code == 202
    return RestoreAttempt.objects.get(pk=response.json()["id"])


def _prompts_of(nodes: list[Any], attempt: RestoreAttempt, event: str) -> list[dict[str, Any]]:
    return [
        entry
        for node in nodes
        for entry in node.prompt_record()
        if entry["event"] == event and str(entry.get("run", "")).startswith(str(attempt.pk))
    ]


@pytest.mark.parametrize("prompt_state", ["finished", "running"])
def test_it_takes_back_a_killed_workers_attempt_and_runs_its_prompt_once(
    prompt_state: str,
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    s3_bucket: Any,
    comfy_settings: list[Any],
) -> None:
    for node in comfy_settings:
        node.clear_record()
        node.set_faults(sampler_seconds=2.0)
    worker = pipeline_worker(threads=2, LEASE_SECONDS=LONG_LEASE)
    attempt = _start_restore()
    wait_for(
        lambda: (
            RestoreAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.RUNNING).exclude(prompt_id="").exists()
        ),
        what="the restore to reach its node",
    )

    worker.kill()
    if prompt_state == "finished":
        wait_for(lambda: _prompts_of(comfy_settings, attempt, "ended"), what="the prompt to end on its node")
    pipeline_worker(threads=2, LEASE_SECONDS=LONG_LEASE)

    done = RestoreAttempt.objects.filter(pk=attempt.pk, status=AttemptStatus.SUCCEEDED)
    wait_for(done.exists, timeout=120, what="the attempt taken back and finished (its lease is 10 minutes)")
    attempt.refresh_from_db()
    assert attempt.tries == 2
    assert attempt.tries_at_requeue == 1  # the killed run's try was given back
    assert len(_prompts_of(comfy_settings, attempt, "queued")) == 1  # the node ran it once, not twice
    assert s3_bucket.keys(f"restored/{attempt.job_id}/") == [attempt.result_key]
