"""cleanup_job_s3_files: deletes a job's objects and its owed cleanups, is safe to run twice, drops malformed ids."""

from __future__ import annotations

import uuid

import pytest

from jobs.cleanups import file_cleanup_done, file_cleanup_latest
from jobs.models import FileCleanup
from jobs.tasks import cleanup_job_s3_files
from rekindle import storage
from rekindle.testing.factories import timestamp_id
from rekindle.testing.s3 import S3Bucket

pytestmark = pytest.mark.django_db


def _store_job_files(job_id: uuid.UUID) -> list[str]:
    ts = timestamp_id()
    keys = [
        storage.processed_key(job_id, "png"),
        storage.restored_key(job_id, ts),
        storage.animation_preview_key(job_id, ts),
        storage.animation_result_key(job_id, ts),
        storage.thumbnail_key(job_id, ts),
    ]
    for key in keys:
        storage.put(key, b"bytes")
    return sorted(keys)


def test_it_states_its_retry_and_time_limit_policy() -> None:
    options = cleanup_job_s3_files.options
    assert options["max_retries"] == 8
    assert options["time_limit"] == 10 * 60_000
    assert options["min_backoff"] > 0


def test_it_deletes_the_jobs_objects_and_does_nothing_the_second_time(s3_bucket: S3Bucket) -> None:
    job_id, other_id = uuid.uuid4(), uuid.uuid4()
    _store_job_files(job_id)
    others = _store_job_files(other_id)

    cleanup_job_s3_files(str(job_id))
    assert s3_bucket.keys() == others
    cleanup_job_s3_files(str(job_id))
    assert s3_bucket.keys() == others


def test_it_deletes_local_files_too() -> None:
    job_id = uuid.uuid4()
    _store_job_files(job_id)
    cleanup_job_s3_files(str(job_id))
    assert all(storage.list_keys(prefix) == [] for prefix in storage.job_prefixes(job_id))


@pytest.mark.parametrize("bad_id", ["", "not-a-uuid", "../processed"])
def test_it_drops_a_malformed_id_without_deleting_anything(s3_bucket: S3Bucket, bad_id: str) -> None:
    keys = _store_job_files(uuid.uuid4())
    cleanup_job_s3_files(bad_id)
    assert s3_bucket.keys() == keys


def test_it_drops_the_jobs_owed_cleanups_once_its_files_are_gone(s3_bucket: S3Bucket) -> None:
    job_id, other_id = uuid.uuid4(), uuid.uuid4()
    _store_job_files(job_id)
    FileCleanup.objects.create(job_id=job_id)
    FileCleanup.objects.create(job_id=job_id)
    kept = FileCleanup.objects.create(job_id=other_id)

    cleanup_job_s3_files(str(job_id))

    assert s3_bucket.keys(f"restored/{job_id}/") == []
    assert list(FileCleanup.objects.values_list("pk", flat=True)) == [kept.pk]


def test_it_keeps_an_obligation_recorded_after_the_listing_began() -> None:
    job_id = uuid.uuid4()
    before = FileCleanup.objects.create(job_id=job_id)
    up_to = file_cleanup_latest(job_id)
    # A result stored after the listing passed its folder: its writer records a new obligation.
    late = FileCleanup.objects.create(job_id=job_id)

    assert file_cleanup_done(job_id, up_to=up_to) == 1
    assert list(FileCleanup.objects.values_list("pk", flat=True)) == [late.pk]
    assert not FileCleanup.objects.filter(pk=before.pk).exists()
