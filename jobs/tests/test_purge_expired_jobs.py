"""purge_expired_jobs: retention on real PostgreSQL and the S3 protocol, one job per unit of work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any
from unittest import mock

import dramatiq
import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from jobs.management.commands import purge_expired_jobs
from jobs.management.commands.purge_expired_jobs import Command
from jobs.models import Job
from jobs.services import job_delete
from rekindle import storage
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt

OLD = timedelta(days=40)


def _command(**options: Any) -> Command:
    command = Command(stdout=StringIO(), stderr=StringIO())
    command.setup(**options)
    return command


def _old_job_with_files(**fields: Any) -> Job:
    job: Job = JobFactory.create(stored_original=True, created_at=timezone.now() - OLD, **fields)
    attempt = RestoreAttemptFactory.create(job=job, succeeded=True, queued_at=timezone.now() - OLD)
    storage.put(attempt.result_key, b"restored", content_type="image/jpeg")
    return job


@pytest.mark.django_db
def test_it_deletes_expired_jobs_one_per_call_with_their_files(
    s3_bucket: S3Bucket,
    stub_broker: dramatiq.Broker,
    stub_worker: dramatiq.Worker,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    expired = [_old_job_with_files(), _old_job_with_files()]
    paid = _old_job_with_files()
    paid_restore = RestoreAttempt.objects.get(job=paid)
    AnimationAttemptFactory.create(job=paid, restore=paid_restore, succeeded=True, hd_ready=True)
    recent = JobFactory.create(stored_original=True)
    # Old, but asked for a new restore last week: still in use.
    active = _old_job_with_files()
    RestoreAttemptFactory.create(job=active, queued_at=timezone.now() - timedelta(days=7))

    command = _command()
    with django_capture_on_commit_callbacks(execute=True):
        assert command.handle_one() is True
    assert Job.objects.filter(pk__in=[j.pk for j in expired]).count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert command.handle_one() is True
        assert command.handle_one() is False
    stub_broker.join("default")

    assert sorted(command.deleted) == sorted(str(j.id) for j in expired)
    assert set(Job.objects.values_list("pk", flat=True)) == {paid.pk, recent.pk, active.pk}
    assert not RestoreAttempt.objects.filter(job_id__in=[j.pk for j in expired]).exists()
    for job in expired:
        all_keys = s3_bucket.keys()
        assert [key for key in all_keys if str(job.id) in key] == []
    for job in (paid, recent, active):
        assert s3_bucket.keys(storage.processed_key(job.id, "jpg")) == [job.original_key]
    assert "deleted 2 job(s) past 30 days" in command.summary()


@pytest.mark.django_db
def test_it_lists_expired_jobs_on_a_dry_run_and_deletes_nothing() -> None:
    expired = JobFactory.create(created_at=timezone.now() - OLD)
    JobFactory.create(created_at=timezone.now() - timedelta(days=5))

    out = StringIO()
    call_command("purge_expired_jobs", "--dry-run", stdout=out)

    lines = out.getvalue().strip().splitlines()
    assert lines == [
        f"would delete job {expired.id} created {expired.created_at:%Y-%m-%d}",
        "purge_expired_jobs: 1 job(s) past 30 days would be deleted (dry run)",
    ]
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_it_takes_the_retention_from_the_option_or_the_setting(settings: Any) -> None:
    job = JobFactory.create(created_at=timezone.now() - timedelta(days=10))
    settings.JOB_RETENTION_DAYS = 30
    assert _command().handle_one() is False
    assert _command(days=7).handle_one() is True
    assert not Job.objects.filter(pk=job.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_it_never_deletes_one_job_twice_when_two_runs_overlap() -> None:
    jobs = [JobFactory.create(created_at=timezone.now() - OLD) for _ in range(2)]
    both_inside = threading.Barrier(2, timeout=10)
    deleted_by_service: list[str] = []

    def job_delete_once_both_hold_a_row(*, job: Job) -> None:
        # Each run waits here while holding its row lock, so the two units really overlap.
        deleted_by_service.append(str(job.id))
        both_inside.wait()
        job_delete(job=job)

    results: list[bool] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_command().handle_one())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with mock.patch.object(purge_expired_jobs, "job_delete", job_delete_once_both_hold_a_row):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)

    assert errors == []
    assert results == [True, True]
    assert sorted(deleted_by_service) == sorted(str(job.id) for job in jobs)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_it_exits_non_zero_when_a_deletion_fails() -> None:
    JobFactory.create(created_at=timezone.now() - OLD)
    with (
        mock.patch.object(purge_expired_jobs, "job_delete", side_effect=RuntimeError("database went away")),
        pytest.raises(Exception, match="database went away") as excinfo,
    ):
        call_command("purge_expired_jobs", stdout=StringIO())
    assert getattr(excinfo.value, "returncode", None) == 1
