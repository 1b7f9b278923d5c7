"""Animation attempts: a short video preview of a restore, and its paid HD result."""

from __future__ import annotations

from django.db import models

from jobs.models import Attempt, AttemptStatus, Job
from restoration.models import RestoreAttempt


class AnimationAttempt(Attempt):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="animation_attempts")
    restore = models.ForeignKey(RestoreAttempt, on_delete=models.CASCADE, related_name="animations")
    preview_key = models.CharField(max_length=255, blank=True)
    thumbnail_key = models.CharField(max_length=255, blank=True)

    # The HD result is a second, paid run on the same animation.
    # Its lifecycle mirrors the attempt's own fields with an ``hd_`` prefix (see jobs.attempts);
    # an empty ``hd_status`` means the HD result was never requested.
    hd_paid = models.BooleanField(default=False)
    hd_status = models.CharField(max_length=16, choices=AttemptStatus.choices, blank=True)
    hd_progress = models.PositiveSmallIntegerField(default=0)
    hd_result_key = models.CharField(max_length=255, blank=True)
    hd_engine = models.CharField(max_length=16, blank=True)
    hd_node = models.CharField(max_length=255, blank=True)
    hd_prompt_id = models.CharField(max_length=64, blank=True)
    hd_tries = models.PositiveSmallIntegerField(default=0)
    hd_tries_at_requeue = models.PositiveSmallIntegerField(default=0)
    hd_lease_expires_at = models.DateTimeField(null=True, blank=True)
    hd_queued_at = models.DateTimeField(null=True, blank=True)
    hd_last_enqueued_at = models.DateTimeField(null=True, blank=True)
    hd_started_at = models.DateTimeField(null=True, blank=True)
    hd_finished_at = models.DateTimeField(null=True, blank=True)
    hd_notified_at = models.DateTimeField(null=True, blank=True)
    hd_error_type = models.CharField(max_length=64, blank=True)
    hd_error_message = models.TextField(blank=True)
    hd_error_details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["queued_at"]
        indexes = [
            models.Index(fields=["job", "queued_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["hd_status", "hd_lease_expires_at"]),
        ]

    def __str__(self) -> str:
        return f"Animation {self.id} of job {self.job_id} ({self.status})"
