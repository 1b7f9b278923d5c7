"""A restore stored its result but could not record it, and its node restarted: the next try records it, no rerun.

Real parts: two ComfyUI stand-ins, moto's S3, PostgreSQL ending the worker's session at the
success write (as a restart does), with ``DB_WRITE_RETRY_SECONDS`` at 0 so the write gives up.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from jobs import runner
from jobs.attempts import attempt_handle_one_stuck, attempt_succeed
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.pipeline import database_url
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}


def _end_this_threads_database_session() -> None:
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


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
        _end_this_threads_database_session()
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
