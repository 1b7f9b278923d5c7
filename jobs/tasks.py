"""Background work of the jobs app: removing a deleted job's files from storage, and sending ready emails."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import dramatiq
from django.conf import settings

from jobs.cleanups import file_cleanup_done, file_cleanup_latest
from jobs.kinds import kind_named
from jobs.notifications import EmailNotSent, job_ready_email_deliver
from rekindle import storage

logger = logging.getLogger(__name__)


# Storage errors (S3 down, throttled, 5xx) are transient: retry with backoff for about
# half an hour. Listing and deleting are idempotent, so a retry, or a message delivered
# twice, simply finds less to delete.
@dramatiq.actor(
    queue_name="default",
    max_retries=8,
    min_backoff=5_000,
    max_backoff=300_000,
    time_limit=10 * 60_000,
)
def cleanup_job_s3_files(job_id: str) -> None:
    """Delete every object under the job's key prefixes, in batches of at most 1000 keys, then its owed cleanups.

    Only the ``FileCleanup`` rows recorded before the listing started are dropped: one
    recorded meanwhile may name an object written after the listing passed it.
    """
    try:
        canonical = str(uuid.UUID(job_id))
    except ValueError:
        # A malformed id can never succeed: drop the message rather than retry it.
        logger.error("cleanup_job_s3_files: %r is not a job id; nothing deleted", job_id)
        return
    owed_up_to = file_cleanup_latest(canonical)
    deleted = storage.delete_job_files(canonical)
    file_cleanup_done(canonical, up_to=owed_up_to)
    logger.info("cleanup_job_s3_files: deleted %d object(s) of job %s", deleted, canonical)


# A mail server that is down, slow or hung (each try gives up after EMAIL_TIMEOUT seconds per SMTP
# step) is retried with backoff from 10 s up to 10 minutes, EMAIL_MAX_RETRIES times (about an hour
# with the default 8). The once-only claim on notified_at makes a retry after a send that went
# through a no-op. The time limit only catches a send that ignores its socket timeout.
@dramatiq.actor(
    queue_name="default",
    max_retries=settings.EMAIL_MAX_RETRIES,
    min_backoff=10_000,
    max_backoff=600_000,
    time_limit=(settings.EMAIL_TIMEOUT * 8 + 30) * 1000,
    retry_when=lambda retries, exc: isinstance(exc, EmailNotSent) and retries < settings.EMAIL_MAX_RETRIES,
)
def send_ready_email(kind_name: str, attempt_id: str, requested_at: str | None = None) -> None:
    """Send one attempt's ready email (``requested_at``: staff's resend, sent again even if it went out before)."""
    try:
        kind = kind_named(kind_name)
    except LookupError:
        logger.error("send_ready_email: no attempt kind %r; nothing sent", kind_name)
        return
    attempt = kind.rows().select_related("job").filter(pk=attempt_id).first()
    if attempt is None:
        return  # the job was deleted meanwhile
    moment = datetime.fromisoformat(requested_at) if requested_at else None
    job_ready_email_deliver(attempt=attempt, force=moment is not None, requested_at=moment)
