"""Reads of jobs, shaped so that serializing them never queries again."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet

from jobs.kinds import attempt_kinds
from jobs.models import Job


def job_detail_queryset() -> QuerySet[Job]:
    """Jobs with the attempts of each kind their API answer lists, oldest first: one query per kind more."""
    prefetches = []
    for kind in attempt_kinds():
        if not kind.job_field:
            continue
        attempts = kind.rows().order_by("queued_at", "id")
        if kind.serializer_related:  # select_related() with no names would follow every foreign key
            attempts = attempts.select_related(*kind.serializer_related)
        prefetches.append(Prefetch(kind.job_field, queryset=attempts))
    return Job.objects.prefetch_related(*prefetches)


def job_list_for_owner(*, owner: User) -> QuerySet[Job]:
    """The jobs a signed-in person owns, newest first."""
    return Job.objects.filter(owner=owner).order_by("-created_at", "-id")
