"""Reads of jobs, shaped so that serializing them never queries again."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet

from animation.models import AnimationAttempt
from jobs.models import Job
from restoration.models import RestoreAttempt


def job_detail_queryset() -> QuerySet[Job]:
    """Jobs with their restore and animation attempts, oldest first: three queries in all."""
    return Job.objects.prefetch_related(
        Prefetch("restore_attempts", queryset=RestoreAttempt.objects.order_by("queued_at", "id")),
        Prefetch("animation_attempts", queryset=AnimationAttempt.objects.order_by("queued_at", "id")),
    )


def job_list_for_owner(*, owner: User) -> QuerySet[Job]:
    """The jobs a signed-in person owns, newest first."""
    return Job.objects.filter(owner=owner).order_by("-created_at", "-id")
