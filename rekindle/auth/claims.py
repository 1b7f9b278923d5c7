"""Claiming an anonymous job: a signed-in person presents the job's token once and becomes its owner.

After the claim the job is theirs without the token; the token keeps working too,
because the links in the job's emails carry it.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.db import transaction
from rest_framework import status

from jobs.access import JobNotFound, token_matches
from jobs.models import Job
from rekindle.api_errors import Conflict


class JobOwnedByAnother(Conflict):
    default_code = "already_claimed"
    default_detail = "This job already belongs to another account."
    status_code = status.HTTP_409_CONFLICT


def job_claim(*, job_id: str | uuid.UUID, user: User, token: str | None) -> Job:
    """Make ``user`` the owner of the job whose token is ``token``.

    Raises ``JobNotFound`` (404) for an unknown job or a token that is not this
    job's, exactly as every other endpoint does, and ``JobOwnedByAnother`` (409)
    when the job belongs to someone else. Claiming your own job again is a no-op.
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
