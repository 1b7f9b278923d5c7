"""Emails to the person behind a job: "your restore / animation / HD video is ready" (or could not be finished).

One email per attempt when it succeeds or finally fails, sent after the transaction that
recorded it commits (``jobs.attempts`` schedules it). ``notified_at`` is claimed with a
conditional UPDATE before sending, so two senders never both send; a send that fails
gives the claim back and is logged. Staff may send it again with ``force=True``.

The email links to the job through ``JOB_LINK_URL`` with a signed, expiring ``access``
value (``jobs.access.job_link_access``): the job's token is never stored, so it cannot be
put in the link, and the signed value works in its place for ``JOB_LINK_MAX_AGE_DAYS``.

Another app may add to the email of one kind of attempt without this module knowing it:
``register_email_context("animate_hd", hook)`` has ``hook(attempt)`` return extra template
values (billing adds the amount paid for the HD video).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import caches
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone

from jobs.access import job_link_access
from jobs.customer_errors import customer_error
from jobs.kinds import kind_of
from jobs.models import Attempt, AttemptStatus, Job

logger = logging.getLogger(__name__)
events = structlog.stdlib.get_logger(__name__)

FINISHED = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)

EmailContextHook = Callable[[Attempt], Mapping[str, Any]]
_context_hooks: dict[str, list[EmailContextHook]] = {}


def register_email_context(kind_name: str, hook: EmailContextHook) -> None:
    """Have ``hook(attempt)`` add template values to the emails of attempts of the kind ``kind_name``."""
    hooks = _context_hooks.setdefault(kind_name, [])
    if hook not in hooks:
        hooks.append(hook)


def job_link(job: Job) -> str:
    """The link an email gives for ``job``: signed, expiring, no token needed."""
    return str(settings.JOB_LINK_URL).format(job_id=job.id, access=job_link_access(job.id))


def job_ready_email_send(*, attempt: Attempt, force: bool = False) -> bool:
    """Email the job's address that ``attempt`` succeeded or failed; True when an email went out.

    Without ``force`` it sends at most once per attempt (per run, since a requeue clears
    ``notified_at``) and only for a finished one. ``force`` sends again whatever was
    sent before (the admin's "resend the ready email"), still only for a finished one.
    The email says what went wrong in the customer's words (``jobs.customer_errors``),
    never the engine's.
    """
    status = attempt.status
    if status not in FINISHED:
        return False
    rows = type(attempt)._default_manager
    now = timezone.now()
    if not force:
        claimed = rows.filter(pk=attempt.pk, status=status, notified_at__isnull=True).update(notified_at=now)
        if claimed != 1:
            return False

    job = attempt.job
    succeeded = status == AttemptStatus.SUCCEEDED
    error = None if succeeded else customer_error(attempt)
    context: dict[str, Any] = {
        "succeeded": succeeded,
        "what": kind_of(attempt).noun,
        "error_message": error.message if error is not None else "",
        "link": job_link(job),
        "link_days": settings.JOB_LINK_MAX_AGE_DAYS,
        "job": job,
        # Results of the local CPU engine say so: it is a development stand-in for the GPU nodes.
        "development_engine": attempt.engine_label if attempt.engine == "local" else "",
    }
    for hook in _context_hooks.get(kind_of(attempt).name, ()):
        context.update(hook(attempt))
    subject = render_to_string("emails/attempt_ready_subject.txt", context).strip()
    context["subject"] = subject
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("emails/attempt_ready.txt", context),
        to=[job.email],
    )
    message.attach_alternative(render_to_string("emails/attempt_ready.html", context), "text/html")
    try:
        message.send()
    except Exception:
        logger.warning("Could not email about %s attempt %s", kind_of(attempt).name, attempt.pk, exc_info=True)
        if not force:
            rows.filter(pk=attempt.pk, notified_at=now).update(notified_at=None)
        return False
    if force:
        rows.filter(pk=attempt.pk).update(notified_at=now)
    # The address is masked by the log scrubber (rekindle/log_redaction.py): support sees f***@example.com.
    events.info("email.sent", to=job.email, kind=kind_of(attempt).name, attempt_id=str(attempt.pk), job_id=str(job.pk))
    return True


def job_link_email_send(*, job_id: str) -> bool:
    """Email a fresh link to the job's own address (someone's link expired); True when one went out.

    Anyone may ask, so it says nothing about whether the job exists, sends only to the address
    the job was uploaded with, and at most once per ``JOB_LINK_RESEND_MINUTES`` per job.
    """
    try:
        pk = uuid.UUID(str(job_id))
    except ValueError:
        return False
    job = Job.objects.filter(pk=pk).first()
    if job is None:
        return False
    cache = caches[settings.THROTTLE_CACHE]
    key = f"job-link-resend:{job.pk}"
    try:
        if not cache.add(key, 1, timeout=int(settings.JOB_LINK_RESEND_MINUTES) * 60):
            return False
    except Exception:
        logger.warning("Could not count link resends of job %s; sending anyway", job.pk, exc_info=True)
    context = {"link": job_link(job), "link_days": settings.JOB_LINK_MAX_AGE_DAYS, "job": job}
    subject = render_to_string("emails/job_link_subject.txt", context).strip()
    context["subject"] = subject
    message = EmailMultiAlternatives(
        subject=subject, body=render_to_string("emails/job_link.txt", context), to=[job.email]
    )
    message.attach_alternative(render_to_string("emails/job_link.html", context), "text/html")
    try:
        message.send()
    except Exception:
        logger.warning("Could not email a fresh link for job %s", job.pk, exc_info=True)
        cache.delete(key)
        return False
    return True
