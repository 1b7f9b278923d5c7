"""A job deleted while its animation or HD result is being written keeps nothing in S3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest

from animation.services import animation_attempt_process, hd_result_process
from jobs.models import FileCleanup, Job
from jobs.services import job_delete
from rekindle import storage
from rekindle.testing.factories import (
    AnimationAttemptFactory,
    HDAttemptFactory,
    JobFactory,
    RestoreAttemptFactory,
    jpeg_bytes,
)
from rekindle.testing.s3 import S3Bucket

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL = {"seconds": 1, "fps": 8, "width": 256, "height": 256, "seed": 3}


@pytest.fixture
def cleanup_worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def job_keys(job_id: Any, bucket: S3Bucket) -> list[str]:
    return [key for prefix in storage.job_prefixes(job_id) for key in bucket.keys(prefix)]


def delete_before_writing(
    monkeypatch: pytest.MonkeyPatch, job_id: Any, worker: dramatiq.Worker, *, folder: str
) -> list[str]:
    """Delete the job and run its cleanup to the end just before the first write under ``folder``."""
    real_put = storage.put
    written: list[str] = []

    def put(key: str, content: Any, *, content_type: str | None = None) -> str:
        if key.startswith(folder) and Job.objects.filter(pk=job_id).exists():
            job_delete(job=Job.objects.get(pk=job_id))
            broker: Any = worker.broker
            broker.join("default", fail_fast=True)
            worker.join()
        written.append(key)
        return real_put(key, content, content_type=content_type)

    monkeypatch.setattr(storage, "put", put)
    return written


def restored_job() -> Any:
    job = JobFactory.create(stored_original=True)
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    storage.put(restore.result_key, jpeg_bytes(320, 240), content_type="image/jpeg")
    return job, restore


def test_it_removes_the_preview_and_thumbnail_when_the_delete_lands_between_them(
    s3_bucket: S3Bucket, cleanup_worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, restore = restored_job()
    attempt = AnimationAttemptFactory.create(job=job, restore=restore, parameters=SMALL)
    written = delete_before_writing(monkeypatch, job.id, cleanup_worker, folder="thumbnails/")

    assert animation_attempt_process(attempt_id=str(attempt.pk)) == "lost"

    assert [key.split("/")[0] for key in written] == ["animated", "thumbnails"]
    assert job_keys(job.id, s3_bucket) == []
    assert not FileCleanup.objects.filter(job_id=job.id).exists()


def test_it_removes_the_hd_result_when_the_delete_lands_while_it_is_written(
    s3_bucket: S3Bucket, cleanup_worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, restore = restored_job()
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True)
    hd = HDAttemptFactory.create(job=job, animation=animation, parameters={"seed": 3})
    written = delete_before_writing(monkeypatch, job.id, cleanup_worker, folder="animated/")

    assert hd_result_process(attempt_id=str(hd.pk)) == "lost"

    assert len(written) == 1
    assert written[0].endswith("_result.mp4")
    assert job_keys(job.id, s3_bucket) == []
