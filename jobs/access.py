"""Who may see or change a job: its owner, or whoever holds the job's access token.

Every endpoint under ``/api/v1/jobs/{id}`` loads its job through :func:`job_for_request`.
The token is shown once at upload and only its sha256 is stored. It comes in the
``X-Job-Token`` header, or the ``token`` query parameter. Links in emails carry instead a
signed, expiring ``access`` parameter (:func:`job_link_access`), since the token is not
known after upload; a page that took it from its address sends it on in the
``X-Job-Access`` header, so it is not written into access logs again.

A caller who may not see a job gets the same 404 as for a job that does not exist
(no token, another job's token, a malformed id, an unknown id), so the API never
reveals whether an id exists.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

import structlog
from django.conf import settings
from django.core import signing
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework.request import Request

from jobs.models import Job
from rekindle.errors import NotFound

TOKEN_HEADER = "X-Job-Token"  # noqa: S105  (a header name)
TOKEN_QUERY_PARAM = "token"  # noqa: S105  (a parameter name)
# The signed link in emails (see job_link_access).
LINK_QUERY_PARAM = "access"
LINK_HEADER = "X-Job-Access"
_LINK_SALT = "rekindle.jobs.link-access"


class JobNotFound(NotFound):
    message = "No such job, or it is not yours."


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_job_token() -> tuple[str, str]:
    """A fresh access token and the hash to store: ``(token, token_hash)``."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def token_from_request(request: Request | HttpRequest) -> str | None:
    # ``GET`` is the query string on Django's request and DRF's alike (DRF's ``query_params``).
    token = request.headers.get(TOKEN_HEADER) or request.GET.get(TOKEN_QUERY_PARAM)
    return token.strip() if token and token.strip() else None


def token_matches(job: Job, token: str | None) -> bool:
    if not token or not job.token_hash:
        return False
    return hmac.compare_digest(hash_token(token), job.token_hash)


def job_link_access(job_id: str | uuid.UUID) -> str:
    """A signed, expiring stand-in for the job's token, for the links in emails (the token is never stored).

    It signs the job id with the ``SECRET_KEY`` and a timestamp; the API accepts it as
    ``?access=`` for ``JOB_LINK_MAX_AGE_DAYS`` days, with the same rights as the token.
    """
    signed = signing.TimestampSigner(salt=_LINK_SALT).sign(str(job_id))
    return signed.split(":", 1)[1]  # the job id is in the link already


def job_link_access_state(job_id: str | uuid.UUID, access: str | None) -> str:
    """Whether ``access`` opens job ``job_id``: ``valid``, ``expired`` (it did, once) or ``invalid``.

    Needs no database: the value is a signature of the id. The job page uses it to tell an
    expired email link (offer a fresh one) from a mistyped one.
    """
    if not access or not access.strip():
        return "invalid"
    max_age = timedelta(days=settings.JOB_LINK_MAX_AGE_DAYS)
    try:
        signing.TimestampSigner(salt=_LINK_SALT).unsign(f"{job_id}:{access.strip()}", max_age=max_age)
    except signing.SignatureExpired:
        return "expired"
    except signing.BadSignature:
        return "invalid"
    return "valid"


def job_link_access_matches(job: Job, access: str | None) -> bool:
    return job_link_access_state(job.id, access) == "valid"


def link_access_from_request(request: Request | HttpRequest) -> str | None:
    access = request.headers.get(LINK_HEADER) or request.GET.get(LINK_QUERY_PARAM)
    return access.strip() if access and access.strip() else None


def can_access(request: Request | HttpRequest, job: Job) -> bool:
    user = request.user
    if user is not None and user.is_authenticated and job.owner_id is not None and job.owner_id == user.pk:
        return True
    if job_link_access_matches(job, link_access_from_request(request)):
        return True
    return token_matches(job, token_from_request(request))


def job_for_request(
    request: Request | HttpRequest,
    job_id: str | uuid.UUID,
    *,
    queryset: QuerySet[Job] | None = None,
) -> Job:
    """The job ``job_id`` if the caller may access it, else raise :class:`JobNotFound` (404).

    ``queryset`` lets a selector pass its ``select_related``/``prefetch_related``.
    """
    try:
        pk = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound() from None
    qs = queryset if queryset is not None else Job.objects.all()
    try:
        job = qs.get(pk=pk)
    except Job.DoesNotExist:
        raise JobNotFound() from None
    if not can_access(request, job):
        raise JobNotFound()
    # The rest of the request's lines (the access line included) name the job it is about.
    structlog.contextvars.bind_contextvars(job_id=str(job.pk))
    return job
