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

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from jobs.kinds import attempt_kinds
from jobs.models import Job
from rekindle import storage

# The top-level folders job files live in (see rekindle.storage's key layout).
JOB_FILE_PREFIXES = ("processed/", "restored/", "animated/", "thumbnails/")


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
# Listing and deleting are rekindle.storage's (one lister, one batch deleter); the
# prune_orphan_files command reaches them through here, next to the rules they serve.
StoredObject = storage.StoredObject
stored_object_pages = storage.stored_object_pages
delete_keys = storage.delete_keys


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
