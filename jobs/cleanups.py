"""Removing a deleted job's files as an obligation that outlives a broker outage (``FileCleanup`` rows).

The row is written in the transaction that deletes the job, so the obligation commits
with the delete; the message to ``cleanup_job_s3_files`` goes out after commit, and a
send that fails (Redis down) is logged and swallowed, exactly like an attempt's: the
DELETE still answers 204 and ``requeue_stuck_attempts`` sends it again later. The actor
removes the job's rows recorded before it started listing, so an obligation recorded
while it ran (a late result written after the delete) stays for the next message.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs.models import FileCleanup

logger = logging.getLogger(__name__)


def file_cleanup_owe(job_id: uuid.UUID | str) -> FileCleanup:
    """Record that the job's files must go, and send the cleanup once the current transaction commits."""
    cleanup = FileCleanup.objects.create(job_id=job_id)
    pk = cleanup.pk
    transaction.on_commit(lambda: file_cleanup_send(pk))
    return cleanup


def file_cleanup_send(cleanup_id: int) -> bool:
    """Hand the cleanup's job id to ``cleanup_job_s3_files`` now; False (logged) when the broker cannot take it."""
    from jobs.tasks import cleanup_job_s3_files

    job_id = FileCleanup.objects.filter(pk=cleanup_id).values_list("job_id", flat=True).first()
    if job_id is None:
        return True  # done already
    try:
        cleanup_job_s3_files.send(str(job_id))
    except Exception:
        logger.warning(
            "cleanup.send_failed job_id=%s: the cleanup stays owed until requeue_stuck_attempts sends it",
            job_id,
            exc_info=True,
        )
        return False
    FileCleanup.objects.filter(pk=cleanup_id).update(last_enqueued_at=timezone.now(), attempts=F("attempts") + 1)
    return True


def file_cleanup_latest(job_id: uuid.UUID | str) -> int:
    """The newest obligation of the job (0: none), read before listing its files.

    Ids come from the database's sequence, not a clock: every row with a smaller id was
    inserted, and the object it stands for written, before this read.
    """
    latest: int | None = FileCleanup.objects.filter(job_id=job_id).order_by("-pk").values_list("pk", flat=True).first()
    return latest or 0


def file_cleanup_done(job_id: uuid.UUID | str, *, up_to: int) -> int:
    """The job's files are gone as of the listing that followed ``file_cleanup_latest``: drop those obligations."""
    deleted, _ = FileCleanup.objects.filter(job_id=job_id, pk__lte=up_to).delete()
    return deleted


def file_cleanup_take_one_owed(*, exclude: set[int], broker_since: datetime | None = None) -> int | None:
    """The id of one owed cleanup whose message never got through, went out long ago, or went out before the
    broker's Redis last started (``broker_since``: it may have been lost); None when none is.

    No row lock: two sweeps at once may both send one cleanup, which only lists the job's
    prefixes twice (deleting is idempotent), and the send itself must not hold a transaction.
    """
    resend_before = timezone.now() - timedelta(seconds=int(settings.QUEUED_RESEND_SECONDS))
    due = Q(last_enqueued_at__isnull=True) | Q(last_enqueued_at__lt=resend_before)
    if broker_since is not None:
        due |= Q(last_enqueued_at__lt=broker_since)
    owed = FileCleanup.objects.filter(due)
    pk: int | None = owed.exclude(pk__in=exclude).order_by("created_at").values_list("pk", flat=True).first()
    return pk
