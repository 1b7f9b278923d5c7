"""prune_orphan_files: objects no row points at, past the grace period, deleted in batches, one page per unit."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from jobs import retention
from jobs.management.commands import prune_orphan_files
from jobs.management.commands.prune_orphan_files import Command
from rekindle import storage
from rekindle.cron import advisory_lock
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, timestamp_id
from rekindle.testing.s3 import S3Bucket


def _command(*, hours_ahead: float = 0, **options: Any) -> Command:
    command = Command(stdout=StringIO(), stderr=StringIO())
    command.setup(**options)
    if hours_ahead:
        # Look at the bucket from the future, as the cron run a day later would.
        future = timezone.now() + timedelta(hours=hours_ahead)
        command.clock = lambda: future
    return command


def _age(media_root: Path, key: str, hours: float) -> None:
    stamp = time.time() - hours * 3600
    os.utime(media_root / key, (stamp, stamp))


def _drain(command: Command) -> int:
    units = 0
    while command.handle_one():
        units += 1
    return units


@pytest.mark.django_db
def test_it_deletes_old_orphans_and_keeps_what_rows_hold_or_is_young(settings: Any) -> None:
    media = Path(settings.MEDIA_ROOT)
    job = JobFactory.create(stored_original=True)
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, hd_ready=True)
    held = [job.original_key, restore.result_key, animation.preview_key, animation.thumbnail_key]
    held.append(animation.hd.result_key)
    for key in held[1:]:
        storage.put(key, b"held")
    gone_job = "0b7c8a3e-2f5d-4f0e-9a39-6a0f7c1d2e3f"
    old_orphans = [
        storage.processed_key(gone_job, "jpg"),
        storage.restored_key(gone_job, timestamp_id()),
        storage.restored_key(job.id, timestamp_id()),
    ]
    young_orphan = storage.restored_key(gone_job, timestamp_id())
    for key in [*old_orphans, young_orphan]:
        storage.put(key, b"orphan")
    for key in [*held, *old_orphans]:
        _age(media, key, hours=48)
    _age(media, young_orphan, hours=2)
    (media / "unrelated").mkdir()
    (media / "unrelated" / "keep.txt").write_text("not a job file")
    _age(media, "unrelated/keep.txt", hours=1000)

    command = _command()
    # One page per prefix that has files: processed/, restored/, animated/, thumbnails/.
    assert _drain(command) == 4

    assert sorted(command.orphan_keys) == sorted(old_orphans)
    for key in old_orphans:
        assert not (media / key).exists()
    for key in [*held, young_orphan, "unrelated/keep.txt"]:
        assert (media / key).exists(), key
    assert command.summary() == "deleted 3 orphan file(s) of 9 scanned, older than 24 h"


@pytest.mark.django_db
def test_it_prunes_a_bucket_in_pages_with_batched_deletes(s3_bucket: S3Bucket) -> None:
    job = JobFactory.create(stored_original=True)
    gone_job = "5b1e3c0a-8d7f-4a2b-9c6d-1e2f3a4b5c6d"
    orphan_keys = [f"restored/{gone_job}/{i:04d}.jpg" for i in range(7)]
    for key in orphan_keys:
        s3_bucket.put(key, b"x")
    s3_bucket.put("elsewhere/not-ours.txt", b"x")

    delete_calls: list[int] = []
    real_delete = retention.delete_keys

    def counting_delete(keys: list[str]) -> int:
        delete_calls.append(len(keys))
        return real_delete(keys)

    # Pages of 3 instead of S3's 1000, so a handful of objects spans several pages.
    with (
        mock.patch.object(prune_orphan_files, "stored_object_pages", _pages_of(3)),
        mock.patch.object(prune_orphan_files, "delete_keys", counting_delete),
    ):
        command = _command(hours_ahead=25)
        assert command.handle_one() is True  # processed/: the job's original, held
        assert s3_bucket.keys("restored/") == orphan_keys
        assert command.handle_one() is True  # restored/ page 1
        assert s3_bucket.keys("restored/") == orphan_keys[3:]
        assert _drain(command) == 2
        assert command.handle_one() is False

    assert delete_calls == [0, 3, 3, 1]
    assert s3_bucket.keys() == sorted([job.original_key, "elsewhere/not-ours.txt"])


def _pages_of(size: int) -> Any:
    real = retention.stored_object_pages
    return lambda prefix: real(prefix, page_size=size)


@pytest.mark.django_db
def test_it_lists_orphans_on_a_dry_run_and_deletes_nothing(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("thumbnails/9d2f/abc.jpg", b"x")
    out = StringIO()
    with mock.patch.object(Command, "clock", staticmethod(lambda: timezone.now() + timedelta(days=2))):
        call_command("prune_orphan_files", "--dry-run", stdout=out)
    assert out.getvalue().strip().splitlines() == [
        "orphan thumbnails/9d2f/abc.jpg",
        "prune_orphan_files: would delete 1 orphan file(s) of 1 scanned, older than 24 h (dry run)",
    ]
    assert s3_bucket.keys() == ["thumbnails/9d2f/abc.jpg"]


@pytest.mark.django_db
def test_it_does_not_count_young_objects_as_orphans_within_the_grace_period(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("restored/9d2f/new.jpg", b"x")
    command = _command(hours_ahead=23)
    _drain(command)
    assert command.orphan_keys == []
    assert s3_bucket.keys() == ["restored/9d2f/new.jpg"]


@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_two_overlapping_runs_work_and_the_other_do_nothing(s3_bucket: S3Bucket) -> None:
    orphan_keys = [f"animated/7a1c/{i}_preview.mp4" for i in range(3)]
    for key in orphan_keys:
        s3_bucket.put(key, b"x")
    first_in_unit = threading.Event()
    second_done = threading.Event()
    deleted: list[str] = []
    real_delete = retention.delete_keys

    def slow_delete(keys: list[str]) -> int:
        # The first run pauses inside its unit of work until the second run has finished.
        first_in_unit.set()
        second_done.wait(10)
        deleted.extend(keys)
        return real_delete(keys)

    commands = [_command(hours_ahead=25), _command(hours_ahead=25)]

    def first() -> None:
        try:
            commands[0].run_round()
        finally:
            connections.close_all()

    with mock.patch.object(prune_orphan_files, "delete_keys", slow_delete):
        thread = threading.Thread(target=first)
        thread.start()
        try:
            assert first_in_unit.wait(10)
            assert commands[1].run_round() == 0
            assert commands[1].lock_busy
        finally:
            second_done.set()
            thread.join(20)

    assert sorted(deleted) == orphan_keys
    assert commands[0].orphan_keys == deleted
    assert s3_bucket.keys() == []
    # Once the first run let go of the lock, a new run can take it.
    with advisory_lock(Command.lock_name or "") as acquired:
        assert acquired


def test_it_compares_modified_times_with_the_cutoff() -> None:
    now = datetime(2026, 3, 1, tzinfo=timezone.get_current_timezone())
    page = [retention.StoredObject("restored/a/1.jpg", now - timedelta(hours=30))]
    with mock.patch.object(retention, "referenced_keys", return_value=set()):
        assert retention.orphans(page, cutoff=now - timedelta(hours=24)) == page
        assert retention.orphans(page, cutoff=now - timedelta(hours=31)) == []
