"""Writes of jobs: creating one from an upload, a signed-in person claiming one, deleting one with its files."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import IO

import structlog
from django.contrib.auth.models import User
from django.db import transaction

from jobs.access import JobNotFound, new_job_token, token_matches
from jobs.attempts import attempt_interrupt_on_commit, job_running_prompts
from jobs.cleanups import file_cleanup_owe
from jobs.live import job_changed_on_commit
from jobs.models import Job
from rekindle import storage
from rekindle.errors import Conflict
from rekindle.images import normalize_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedJob:
    job: Job
    token: str  # shown to the uploader once; only its hash is stored


def job_create(*, email: str, image: IO[bytes], owner: User | None = None) -> CreatedJob:
    """Check and normalize the photo, store it at ``processed/{job_id}.{ext}``, then record the job.

    The file is written first, outside any transaction (no network call holds a
    transaction open), and the row is committed after it, so a committed job always
    has its file. If recording the row fails, the file is deleted again. The row is
    created in its own outermost (``durable``) transaction, so "committed" really means
    committed when this returns; calling it inside another transaction is an error.
    Should the process die between the two steps, the file is an orphan no row points
    at, which ``manage.py prune_orphan_files`` removes after its grace period.

    Raises the ``rekindle.images`` errors (415, 413, 400) for a bad upload; nothing is
    stored then.
    """
    normalized = normalize_image(image)
    job_id = uuid.uuid4()
    key = storage.processed_key(job_id, normalized.ext)
    token, token_hash = new_job_token()
    try:
        storage.put(key, normalized.file, content_type=normalized.content_type)
    finally:
        normalized.close()
    try:
        with transaction.atomic(durable=True):
            job = Job.objects.create(
                id=job_id,
                email=email,
                owner=owner if owner is not None and owner.is_authenticated else None,
                token_hash=token_hash,
                original_key=key,
                original_format=normalized.format,
                original_width=normalized.width,
                original_height=normalized.height,
                original_bytes=normalized.size,
                original_sha256=normalized.sha256,
            )
    except BaseException:
        try:
            storage.delete_key(key)
        except Exception:
            logger.exception("job_create: could not remove %s after the job was not recorded", key)
        raise
    structlog.contextvars.bind_contextvars(job_id=str(job.id))
    logger.info(
        "job %s created: %s %dx%d from %s, %d bytes",
        job.id,
        normalized.format,
        normalized.width,
        normalized.height,
        normalized.source_format,
        normalized.size,
    )
    return CreatedJob(job=job, token=token)


class JobOwnedByAnother(Conflict):
    code = "already_claimed"
    message = "This job already belongs to another account."


def job_claim(*, job_id: str | uuid.UUID, user: User, token: str | None) -> Job:
    """Make ``user`` the owner of the job whose token is ``token``.

    After the claim the job is theirs without the token; the token keeps working too,
    because the links in the job's emails stand in for it. Raises ``JobNotFound`` for
    an unknown job or a token that is not this job's, exactly as every other endpoint
    does, and ``JobOwnedByAnother`` when the job belongs to someone else. Claiming your
    own job again is a no-op.
    """
    try:
        pk = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound() from None
    with transaction.atomic():
        # Locked, so two people presenting the token at once cannot both win.
        job = Job.objects.select_for_update().filter(pk=pk).first()
        if job is None:
            raise JobNotFound()
        if job.owner_id == user.pk:
            return job
        if not token_matches(job, token):
            raise JobNotFound()
        if job.owner_id is not None:
            raise JobOwnedByAnother()
        job.owner = user
        job.save(update_fields=["owner", "updated_at"])
    return job


def job_delete(*, job: Job) -> None:
    """Delete the job and its attempts now; its files go after commit, in ``cleanup_job_s3_files``.

    The files are removed by a background actor because a job may have hundreds of
    objects and S3 may be slow or down; the rows go at once so the job disappears
    from the API immediately. The removal is owed in a ``FileCleanup`` row written in
    the same transaction, so a broker that is down when the message should go out
    delays the cleanup (``requeue_stuck_attempts`` sends it again) instead of losing it.

    Every attempt of the job running on a node is interrupted there after commit: the
    person asked for nothing more, so no GPU time goes on it. Its worker notices the row
    is gone through its heartbeat, and a result it stores anyway is removed by that worker
    (``jobs.runner``), so nothing remains under the job's keys.
    """
    job_id = str(job.id)
    with transaction.atomic():
        running = job_running_prompts(job)
        job.delete()
        file_cleanup_owe(job_id)
        for engine, node, prompt_id in running:
            attempt_interrupt_on_commit(engine, node, prompt_id)
        # Open pages of the job learn it is gone.
        job_changed_on_commit(job_id)
