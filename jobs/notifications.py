"""Emails to the person behind a job: "your restore / animation / HD video is ready" (or could not be finished).

One email per attempt when it succeeds or finally fails, queued after the transaction that
recorded it commits (``jobs.attempts`` schedules it) and sent by a worker of its own
(``jobs.tasks.send_ready_email``, with ``EMAIL_TIMEOUT`` and retries with backoff), so a
hung mail server never holds a thread that runs attempts or a web request. ``notified_at``
is claimed with a conditional UPDATE before sending, so two senders never both send; a send
that fails gives the claim back, is logged and retried. Staff may send it again with ``force=True``.

The email links to the job through ``JOB_LINK_URL`` with a signed, expiring ``access``
value (``jobs.access.job_link_access``): the job's token is never stored, so it cannot be
put in the link, and the signed value works in its place for ``JOB_LINK_MAX_AGE_DAYS``.

Another app may add to the email of one kind of attempt without this module knowing it:
``register_email_context("animate_hd", hook)`` has ``hook(attempt)`` return extra template
values (billing adds the amount paid for the HD video).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import caches
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import Q
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


class EmailNotSent(Exception):
    """The mail server refused, failed or timed out; the claim was given back, so a retry sends it."""


def job_ready_email_queue(*, attempt: Attempt, force: bool = False) -> None:
    """Have a worker send the attempt's ready email (``jobs.tasks.send_ready_email``), after commit.

    Never sent in the caller's thread: a worker running attempts, or a web request (the admin's
    resend, a webhook), must not wait on a mail server. ``force`` (staff's resend) sends it again
    even if it went out before; the request's moment travels in the message, so a retry of that
    message after the email went out does not send it twice.
    """
    # jobs.tasks imports this module for the actor's work; imported here to keep the import one-way.
    from jobs.tasks import send_ready_email

    kind_name = kind_of(attempt).name
    attempt_id = str(attempt.pk)
    requested_at = timezone.now().isoformat() if force else None

    def send() -> None:
        try:
            send_ready_email.send(kind_name, attempt_id, requested_at)
        except Exception:
            logger.warning("Could not queue the ready email of %s attempt %s", kind_name, attempt_id, exc_info=True)

    transaction.on_commit(send)


def job_ready_email_send(*, attempt: Attempt, force: bool = False) -> bool:
    """Email the job's address that ``attempt`` succeeded or failed, now; True when an email went out.

    Without ``force`` it sends at most once per attempt (per run, since a requeue clears
    ``notified_at``) and only for a finished one. ``force`` sends again whatever was
    sent before, still only for a finished one. A failed send is logged and answers False.
    """
    try:
        return job_ready_email_deliver(attempt=attempt, force=force)
    except EmailNotSent:
        return False


def job_ready_email_deliver(*, attempt: Attempt, force: bool = False, requested_at: datetime | None = None) -> bool:
    """Send the ready email once; False when it is not due, :class:`EmailNotSent` when the server failed.

    ``notified_at`` is claimed with a conditional UPDATE before sending, so two senders never
    both send and a retry after a send that went through finds it claimed: an email may be lost
    to a worker killed mid-send, never sent twice. Only an error of the send itself gives the
    claim back. With ``force`` the claim is taken unless the email went out after
    ``requested_at`` (the moment staff asked; None: always).
    The email says what went wrong in the customer's words (``jobs.customer_errors``), never the engine's.
    """
    status = attempt.status
    if status not in FINISHED:
        return False
    rows = type(attempt)._default_manager
    previous = rows.filter(pk=attempt.pk).values_list("notified_at", flat=True).first()
    now = timezone.now()
    due = Q(notified_at__isnull=True)
    if force:
        due = Q() if requested_at is None else due | Q(notified_at__lt=requested_at)
    claimed = rows.filter(due, pk=attempt.pk, status=status).update(notified_at=now)
    if claimed != 1:
        return False
    try:
        _deliver(_ready_email(attempt))
    except Exception as exc:
        logger.warning("Could not email about %s attempt %s", kind_of(attempt).name, attempt.pk, exc_info=True)
        rows.filter(pk=attempt.pk, notified_at=now).update(notified_at=previous)
        raise EmailNotSent(f"{type(exc).__name__}: {exc}") from exc
    job = attempt.job
    # The address is masked by the log scrubber (rekindle/log_redaction.py): support sees f***@example.com.
    events.info("email.sent", to=job.email, kind=kind_of(attempt).name, attempt_id=str(attempt.pk), job_id=str(job.pk))
    return True


def _ready_email(attempt: Attempt) -> EmailMultiAlternatives:
    job = attempt.job
    succeeded = attempt.status == AttemptStatus.SUCCEEDED
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
    return message


def _deliver(message: EmailMultiAlternatives) -> None:
    """Send on a connection of its own; once the server took the message, closing it may fail harmlessly.

    Django's ``send()`` raises when the server drops the connection at QUIT, after it accepted
    the message: counted as a failure, the email would be sent again.
    """
    connection = get_connection()
    connection.open()
    try:
        sent = connection.send_messages([message])
    except Exception:
        with contextlib.suppress(Exception):
            connection.close()
        raise
    if not sent:
        with contextlib.suppress(Exception):
            connection.close()
        raise EmailNotSent("the mail server took no message")
    try:
        connection.close()
    except Exception:
        logger.info("The mail server accepted the message, then failed while closing the connection", exc_info=True)


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
