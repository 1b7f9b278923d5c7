"""Animation attempts: a short video preview of a restore, and the paid HD result made from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

from jobs.models import Attempt, Job
from restoration.models import RestoreAttempt


class AnimationAttempt(Attempt):
    """A video preview of one restore. Its HD result, once paid for, is an :class:`HDAttempt` of its own."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="animation_attempts")
    restore = models.ForeignKey(RestoreAttempt, on_delete=models.CASCADE, related_name="animations")
    preview_key = models.CharField(max_length=255, blank=True)
    thumbnail_key = models.CharField(max_length=255, blank=True)
    # Whether the HD result has been paid for (or granted by staff).
    hd_paid = models.BooleanField(default=False)

    if TYPE_CHECKING:
        hd: HDAttempt

    class Meta:
        ordering = ["queued_at"]
        indexes = [
            models.Index(fields=["job", "queued_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
        ]

    def __str__(self) -> str:
        return f"Animation {self.id} of job {self.job_id} ({self.status})"

    @property
    def hd_attempt(self) -> HDAttempt | None:
        """The HD run, or None when it was never asked for (reads the ``select_related`` copy when there is one)."""
        try:
            return self.hd
        except HDAttempt.DoesNotExist:
            return None


class HDAttempt(Attempt):
    """The HD video of an animation, made once it is paid for: at most one per animation.

    It keeps the preview's creative choices (prompt and seed, in ``parameters``) and runs
    the HD workflow's own size, length and frame rate. A failed or canceled run is
    queued again on the same row, so its output key stays the same.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="hd_attempts")
    animation = models.OneToOneField(AnimationAttempt, on_delete=models.CASCADE, related_name="hd")
    result_key = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["queued_at"]
        verbose_name = "HD result"
        verbose_name_plural = "HD results"
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"HD result {self.id} of animation {self.animation_id} ({self.status})"
