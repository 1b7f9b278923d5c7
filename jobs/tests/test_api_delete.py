"""DELETE /api/v1/jobs/{id}: rows go at once, files after commit through cleanup_job_s3_files."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from animation.models import AnimationAttempt
from jobs.models import Job
from jobs.tasks import cleanup_job_s3_files
from rekindle import storage
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _job_with_files(token: str) -> tuple[Job, list[str]]:
    job = JobFactory.create(token=token, stored_original=True)
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, hd_ready=True)
    Job.objects.filter(pk=job.pk).update(selected_restore=restore, latest_animation=animation)
    keys = [restore.result_key, animation.preview_key, animation.thumbnail_key, animation.hd.result_key]
    for key in keys:
        storage.put(key, b"output")
    return job, sorted([job.original_key, *keys])


def test_it_deletes_the_job_and_every_object_under_its_keys(
    api_client: APIClient,
    s3_bucket: S3Bucket,
    stub_broker: Any,
    stub_worker: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    job, keys = _job_with_files("doomed")
    other, other_keys = _job_with_files("kept")
    assert s3_bucket.keys() == sorted(keys + other_keys)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.delete(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "doomed"})

    assert response.status_code == 204
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not RestoreAttempt.objects.filter(job_id=job.pk).exists()
    assert not AnimationAttempt.objects.filter(job_id=job.pk).exists()
    stub_broker.join(cleanup_job_s3_files.queue_name, fail_fast=True)
    stub_worker.join()
    assert s3_bucket.keys() == other_keys
    assert api_client.get(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "doomed"}).status_code == 404
    assert api_client.get(f"/api/v1/jobs/{other.id}", headers={"X-Job-Token": "kept"}).status_code == 200


def test_it_sends_the_cleanup_only_after_commit(
    api_client: APIClient, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job = JobFactory.create(token="t")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        api_client.delete(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "t"})
    assert queued.messages(cleanup_job_s3_files.queue_name) == []
    assert len(callbacks) == 2  # the cleanup, and telling the job's open pages it is gone
    for callback in callbacks:
        callback()
    [message] = queued.messages(cleanup_job_s3_files.queue_name)
    assert message.actor_name == "cleanup_job_s3_files"
    assert message.args == (str(job.id),)


def test_it_deletes_nothing_without_the_token(api_client: APIClient) -> None:
    job, keys = _job_with_files("mine")
    other = JobFactory.create(token="theirs")
    assert storage.list_keys(f"restored/{job.id}/") != []

    answers = [
        api_client.delete(f"/api/v1/jobs/{job.id}"),
        api_client.delete(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": "theirs"}),
    ]

    assert [answer.status_code for answer in answers] == [404, 404]
    assert Job.objects.filter(pk__in=[job.pk, other.pk]).count() == 2
    assert [key for key in keys if key.startswith("processed/")] == storage.list_keys(f"processed/{job.id}.")
