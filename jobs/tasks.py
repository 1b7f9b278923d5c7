"""Background work of the jobs app: removing a deleted job's files from storage."""

from __future__ import annotations

import logging
import uuid

import dramatiq

from jobs.cleanups import file_cleanup_done, file_cleanup_latest
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
