"""Restore attempts: every restoration run of a job's original."""

from __future__ import annotations

from django.db import models

from jobs.models import Attempt, Job


class RestoreAttempt(Attempt):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="restore_attempts")
    result_key = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["queued_at"]
        indexes = [
            models.Index(fields=["job", "queued_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
        ]

    def __str__(self) -> str:
        return f"Restore {self.id} of job {self.job_id} ({self.status})"
