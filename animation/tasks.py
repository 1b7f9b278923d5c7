"""Background work of animations: ``process_animation`` makes a preview, ``generate_hd_result`` the paid HD video."""

from __future__ import annotations

import dramatiq
from django.conf import settings

from animation.services import animation_attempt_process, hd_result_process
from jobs.runner import AttemptRetry


# The retry policy of both actors is process_restoration's (restoration/tasks.py): transient
# errors are redelivered with backoff until the attempt's MAX_TRIES are spent, permanent ones
# are recorded and end the message. Video runs take longer, hence their own time limits.
# Previews are interactive work; the paid HD run has a queue of its own, served first.
@dramatiq.actor(
    queue_name=settings.DRAMATIQ_QUEUE_INTERACTIVE,
    priority=settings.DRAMATIQ_PRIORITY["interactive"],
    max_retries=settings.MAX_TRIES,
    min_backoff=settings.RETRY_MIN_BACKOFF_MS,
    max_backoff=settings.RETRY_MAX_BACKOFF_MS,
    time_limit=settings.ANIMATION_TIME_LIMIT_SECONDS * 1000,
)
def process_animation(attempt_id: str) -> None:
    try:
        animation_attempt_process(attempt_id=attempt_id)
    except AttemptRetry as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from exc


@dramatiq.actor(
    queue_name=settings.DRAMATIQ_QUEUE_PAID,
    priority=settings.DRAMATIQ_PRIORITY["paid"],
    max_retries=settings.MAX_TRIES,
    min_backoff=settings.RETRY_MIN_BACKOFF_MS,
    max_backoff=settings.RETRY_MAX_BACKOFF_MS,
    time_limit=settings.HD_TIME_LIMIT_SECONDS * 1000,
)
def generate_hd_result(attempt_id: str) -> None:
    try:
        hd_result_process(attempt_id=attempt_id)
    except AttemptRetry as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from exc
