"""Jobs: a person's upload session, and the state every processing attempt shares."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone

from rekindle.engines import engine_label


class AttemptStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


# Attempts in these states are "in flight": they hold a worker or will soon.
IN_FLIGHT_STATUSES = (AttemptStatus.QUEUED, AttemptStatus.RUNNING)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
    )
    # sha256 of the access token handed to the uploader once; the token itself is never stored.
    token_hash = models.CharField(max_length=64, editable=False)

    original_key = models.CharField(max_length=255, help_text="Storage key of the normalized original.")
    original_format = models.CharField(max_length=8)
    original_width = models.PositiveIntegerField()
    original_height = models.PositiveIntegerField()
    original_bytes = models.PositiveBigIntegerField()
    original_sha256 = models.CharField(max_length=64)

    selected_restore = models.ForeignKey(
        "restoration.RestoreAttempt",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    latest_animation = models.ForeignKey(
        "animation.AnimationAttempt",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["email"]), models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"Job {self.id} ({self.email})"


class Attempt(models.Model):
    """What a restore attempt and an animation attempt have in common.

    Every status change is a conditional UPDATE on the current status, so two
    workers never run one attempt. A running attempt holds a lease that its worker
    renews; an expired lease means the worker died and the attempt may be requeued.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0-100")

    engine = models.CharField(max_length=16, blank=True)
    node = models.CharField(max_length=255, blank=True, help_text="The ComfyUI node or RunPod endpoint.")
    prompt_id = models.CharField(max_length=64, blank=True)
    # Why the run went to its engine (the own GPU pool, or overflow to RunPod and the wait that sent it there).
    engine_reason = models.CharField(max_length=255, blank=True, default="", db_default="")
    # "node" while the running attempt waits for a processing node (every slot taken, or no node up).
    waiting_for = models.CharField(max_length=16, blank=True, default="", db_default="")
    # Seconds each node (or RunPod endpoint) spent executing it, every try counted: what it really cost.
    node_seconds = models.JSONField(
        default=dict, blank=True, db_default=models.Value({}, output_field=models.JSONField())
    )

    tries = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker has claimed it.")
    # Tries already spent when staff last requeued it: the retry budget counts from here,
    # while ``tries`` itself only grows (it is the claim's fencing token).
    tries_at_requeue = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The worker process holding the running claim, ``host/pid/start`` (jobs.processes): a process that
    # is gone gets its attempts taken back at once, not when the lease runs out.
    claimed_by = models.CharField(max_length=160, blank=True, default="", db_default="")

    # When it was first requested; never changes, so the output keys derived from it stay put.
    queued_at = models.DateTimeField(default=timezone.now)
    # When its message was last handed to the broker (null: never got through).
    last_enqueued_at = models.DateTimeField(null=True, blank=True)
    # After a transient error: when the broker is due to hand its delayed message back (null: no retry waiting).
    # A queued attempt still waiting well past it lost that message (a worker drops its delayed messages when
    # its Redis connection fails) and ``requeue_stuck_attempts`` sends it again.
    next_try_at = models.DateTimeField(null=True, blank=True)
    # When the "ready" (or "failed") email went out; set once.
    notified_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_details = models.JSONField(default=dict, blank=True)

    if TYPE_CHECKING:
        # Every kind declares its own ``job`` foreign key (each with its own related name).
        job: Job
        job_id: uuid.UUID

    class Meta:
        abstract = True

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def engine_label(self) -> str:
        """The engine that ran it, as people should see it (the local engine says it is for development,
        a ComfyUI node running a CPU twin workflow says so)."""
        return engine_label(self.engine, workflow=self.workflow)

    @property
    def gpu_seconds(self) -> float:
        """GPU seconds of every try, on every node."""
        return float(sum(float(seconds) for seconds in (self.node_seconds or {}).values()))

    @property
    def is_in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES


class FileCleanup(models.Model):
    """A removal of a deleted job's files that is still owed: the outbox of ``cleanup_job_s3_files``.

    Written in the transaction that deletes the job (or by a worker whose result landed
    after the job was gone), so the obligation commits with the delete whether or not the
    broker takes the message. The actor removes the rows once the job's files are gone;
    ``requeue_stuck_attempts`` sends again the ones whose message never got through or
    went out more than ``QUEUED_RESEND_SECONDS`` ago. ``job_id`` is no foreign key: the
    job is gone by the time the row matters.
    """

    job_id = models.UUIDField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When its message was last handed to the broker (null: never got through).
    last_enqueued_at = models.DateTimeField(null=True, blank=True)
    # How many messages went out for it (a cleanup that keeps failing shows here).
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["last_enqueued_at"])]

    def __str__(self) -> str:
        return f"Cleanup of job {self.job_id}"
