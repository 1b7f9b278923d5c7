"""Emails to the person behind a job: "your restore / animation / HD video is ready" (or could not be finished).

One email per attempt when it succeeds or finally fails, sent after the transaction that
recorded it commits (``jobs.attempts`` schedules it). ``notified_at`` is claimed with a
conditional UPDATE before sending, so two senders never both send; a send that fails
gives the claim back and is logged. Staff may send it again with ``force=True``.

The email links to the job through ``JOB_LINK_URL`` with a signed, expiring ``access``
value (``jobs.access.job_link_access``): the job's token is never stored, so it cannot be
put in the link, and the signed value works in its place for ``JOB_LINK_MAX_AGE_DAYS``.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone

from jobs.access import job_link_access
from jobs.attempts import HD, MAIN, Stage, rows
from jobs.models import Attempt, AttemptStatus, Job

logger = logging.getLogger(__name__)

FINISHED = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)


def job_link(job: Job) -> str:
    """The link an email gives for ``job``: signed, expiring, no token needed."""
    return str(settings.JOB_LINK_URL).format(job_id=job.id, access=job_link_access(job.id))


def _what(attempt: Attempt, stage: Stage) -> str:
    if stage == HD:
        return "HD video"
    if attempt._meta.label == "animation.AnimationAttempt":
        return "animation preview"
    return "restored photo"


def job_ready_email_send(*, attempt: Attempt, force: bool = False, stage: Stage = MAIN) -> bool:
    """Email the job's address that ``attempt`` succeeded or failed; True when an email went out.

    Without ``force`` it sends at most once per attempt (per run, since a requeue clears
    ``notified_at``) and only for a finished one. ``force`` sends again whatever was
    sent before (the admin's "resend the ready email"), still only for a finished one.
    """
    status = stage.get(attempt, "status")
    if status not in FINISHED:
        return False
    model = type(attempt)
    now = timezone.now()
    if not force:
        claimed = (
            rows(model)
            .filter(pk=attempt.pk, **stage.values(status=status, notified_at__isnull=True))
            .update(**stage.values(notified_at=now))
        )
        if claimed != 1:
            return False

    job: Job = attempt.job  # type: ignore[attr-defined]  # both attempt models have it
    succeeded = status == AttemptStatus.SUCCEEDED
    context = {
        "succeeded": succeeded,
        "what": _what(attempt, stage),
        "error_message": "" if succeeded else stage.get(attempt, "error_message"),
        "link": job_link(job),
        "link_days": settings.JOB_LINK_MAX_AGE_DAYS,
        "job": job,
        # Results of the local CPU engine say so: it is a development stand-in for the GPU nodes.
        "development_engine": attempt.engine_label if attempt.engine == "local" else "",
    }
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
        logger.warning("Could not email %s about %s %s", job.email, model.__name__, attempt.pk, exc_info=True)
        if not force:
            rows(model).filter(pk=attempt.pk, **stage.values(notified_at=now)).update(**stage.values(notified_at=None))
        return False
    if force:
        rows(model).filter(pk=attempt.pk).update(**stage.values(notified_at=now))
    return True
