"""Retention: which jobs have expired, and which stored objects no row points at any more.

Read by the cron commands ``purge_expired_jobs`` and ``prune_orphan_files``.

A job expires ``JOB_RETENTION_DAYS`` after its last activity (its upload, or the
newest attempt of any kind asked for), unless an attempt holds something the person
paid for (its kind's ``keeps_job``, e.g. an animation whose HD result was paid for):
what a person paid for is kept.

An object is an orphan when it lives under one of the job key prefixes, no job or
attempt row holds its key, and it is older than ``ORPHAN_GRACE_HOURS``. The grace
period matters: a worker uploads a result before it records the key, and an upload
stores the original before its row commits, so a young object without a row is
usually one that is about to get one. Objects outside the job prefixes are never
looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from jobs.kinds import attempt_kinds
from jobs.models import Job
from rekindle import storage

# The top-level folders job files live in (see rekindle.storage's key layout).
JOB_FILE_PREFIXES = ("processed/", "restored/", "animated/", "thumbnails/")
PAGE_SIZE = storage.DELETE_BATCH_SIZE


def retention_cutoff(*, now: datetime | None = None, days: int | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=days or settings.JOB_RETENTION_DAYS)


def jobs_expired(*, cutoff: datetime) -> QuerySet[Job]:
    """Jobs with no activity since ``cutoff`` and nothing paid for, oldest first."""
    expired = Job.objects.filter(created_at__lt=cutoff)
    for kind in attempt_kinds():
        rows = kind.rows().filter(job=OuterRef("pk"))
        expired = expired.exclude(Exists(rows.filter(queued_at__gte=cutoff)))
        if kind.keeps_job is not None:
            expired = expired.exclude(Exists(rows.filter(kind.keeps_job)))
    return expired.order_by("created_at", "id")


# --- Stored objects ---------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: datetime


def _s3_location(store: Any) -> str:
    location = (store.location or "").strip("/")
    return f"{location}/" if location else ""


def _s3_pages(store: Any, prefix: str, page_size: int) -> Iterator[list[StoredObject]]:
    client = store.connection.meta.client
    location = _s3_location(store)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(
        Bucket=store.bucket_name, Prefix=location + prefix, PaginationConfig={"PageSize": page_size}
    ):
        objects = [
            StoredObject(entry["Key"][len(location) :], entry["LastModified"]) for entry in page.get("Contents", ())
        ]
        if objects:
            yield objects


def _local_pages(store: Any, prefix: str, page_size: int) -> Iterator[list[StoredObject]]:
    root = store.path(prefix.rstrip("/"))
    page: list[StoredObject] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            key = os.path.relpath(path, store.location).replace(os.sep, "/")
            try:
                modified = datetime.fromtimestamp(os.stat(path).st_mtime, tz=UTC)
            except FileNotFoundError:
                continue  # deleted while we walked
            page.append(StoredObject(key, modified))
            if len(page) == page_size:
                yield page
                page = []
    if page:
        yield page


def stored_object_pages(prefix: str, *, page_size: int = PAGE_SIZE) -> Iterator[list[StoredObject]]:
    """Every stored object under ``prefix`` with its last-modified time, a page at a time.

    On S3 each page is one ListObjectsV2 response, so the modified times come with
    the listing (no request per object).
    """
    store = storage.storage()
    if storage.is_s3(store):
        yield from _s3_pages(store, prefix, page_size)
    else:
        yield from _local_pages(store, prefix, page_size)


def referenced_keys(keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` that a job or an attempt row (of any kind) holds."""
    wanted = list(keys)
    if not wanted:
        return set()
    found: set[str] = set(Job.objects.filter(original_key__in=wanted).values_list("original_key", flat=True))
    for kind in attempt_kinds():
        for field in kind.output_fields:
            found.update(kind.rows().filter(**{f"{field}__in": wanted}).values_list(field, flat=True))
    return found


def orphans(page: Iterable[StoredObject], *, cutoff: datetime) -> list[StoredObject]:
    """The objects of ``page`` older than ``cutoff`` that no row points at."""
    old = [obj for obj in page if obj.modified < cutoff]
    held = referenced_keys(obj.key for obj in old)
    return [obj for obj in old if obj.key not in held]


def delete_keys(keys: list[str]) -> int:
    """Delete exactly these objects: one DeleteObjects request per 1000 keys on S3."""
    store = storage.storage()
    if not keys:
        return 0
    if storage.is_s3(store):
        client: Any = store.connection.meta.client  # type: ignore[attr-defined]
        location = _s3_location(store)
        for start in range(0, len(keys), storage.DELETE_BATCH_SIZE):
            batch = keys[start : start + storage.DELETE_BATCH_SIZE]
            response = client.delete_objects(
                Bucket=store.bucket_name,  # type: ignore[attr-defined]
                Delete={"Objects": [{"Key": location + key} for key in batch], "Quiet": True},
            )
            errors = [e for e in response.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise RuntimeError(f"S3 refused to delete {len(errors)} object(s): {errors[:3]}")
        return len(keys)
    for key in keys:
        store.delete(key)
    return len(keys)
