"""A restore on ComfyUI stand-ins while PostgreSQL ends the worker's session, as a restart does.

Real parts: two ComfyUI stand-ins, moto's S3, PostgreSQL ending the session (``pg_terminate_backend``)
at a chosen write. The result a node made is never made twice: it is kept when the write can be
made again, and recorded by the next try when it cannot.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from jobs import runner
from jobs.attempts import attempt_add_node_seconds, attempt_handle_one_stuck, attempt_succeed
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.postgres import end_this_threads_database_session
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}


def _queued_prompts(nodes: list[Any], attempt: RestoreAttempt) -> list[dict[str, Any]]:
    return [
        entry
        for node in nodes
        for entry in node.prompt_record()
        if entry["event"] == "queued" and str(entry.get("run", "")).startswith(str(attempt.pk))
    ]


def test_a_stored_result_whose_success_was_not_recorded_is_recorded_by_the_next_try_not_made_again(
    comfy_settings: list[Any], s3_bucket: S3Bucket, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DB_WRITE_RETRY_SECONDS = 0
    for node in comfy_settings:
        node.clear_record()
    job = JobFactory.create(stored_original=True)
    attempt = RestoreAttemptFactory.create(job=job, parameters=SMALL_RESTORE)

    def succeed_as_the_database_restarts(*args: Any, **kwargs: Any) -> bool:
        end_this_threads_database_session()
        return attempt_succeed(*args, **kwargs)

    monkeypatch.setattr(runner, "attempt_succeed", succeed_as_the_database_restarts)
    with pytest.raises(DatabaseError):
        restore_attempt_process(attempt_id=str(attempt.pk))
    monkeypatch.setattr(runner, "attempt_succeed", attempt_succeed)
    connection.close()

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.RUNNING  # what the lost write left
    stored = s3_bucket.keys(f"restored/{job.id}/")
    assert len(stored) == 1
    # The node restarts: its history, and with it the prompt's outputs, are gone.
    node = next(node for node in comfy_settings if node.url == attempt.node)
    node.forget()
    # The lease runs out and the sweep puts the attempt back.
    RestoreAttempt.objects.filter(pk=attempt.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    outcome = attempt_handle_one_stuck(RestoreAttempt)
    assert outcome is not None
    assert outcome.action == "requeued"

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    attempt.refresh_from_db()
    assert attempt.tries == 2
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert s3_bucket.keys(f"restored/{job.id}/") == stored == [attempt.result_key]
    assert len(_queued_prompts(comfy_settings, attempt)) == 1  # made once, on the first try
    assert Job.objects.get(pk=job.pk).selected_restore_id == attempt.pk


def test_a_finished_run_whose_gpu_seconds_meet_a_lost_connection_keeps_its_result(
    comfy_settings: list[Any], s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    for node in comfy_settings:
        node.clear_record()
    job = JobFactory.create(stored_original=True)
    attempt = RestoreAttemptFactory.create(job=job, parameters=SMALL_RESTORE)
    ended: list[bool] = []

    def add_as_the_database_restarts(*args: Any, **kwargs: Any) -> None:
        if not ended:
            ended.append(True)
            end_this_threads_database_session()
        attempt_add_node_seconds(*args, **kwargs)

    monkeypatch.setattr(runner, "attempt_add_node_seconds", add_as_the_database_restarts)

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    attempt.refresh_from_db()
    assert ended == [True]
    assert attempt.tries == 1
    assert attempt.node_seconds[attempt.node] > 0
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]
    assert len(_queued_prompts(comfy_settings, attempt)) == 1
