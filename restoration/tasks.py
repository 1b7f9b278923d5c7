"""Background work of restorations: ``process_restoration`` runs one restore attempt."""

from __future__ import annotations

import dramatiq
from django.conf import settings

from jobs.runner import AttemptRetry
from restoration.services import restore_attempt_process


# Retries: a transient error puts the attempt back in the queue and raises Retry, so the
# broker redelivers with backoff; the attempt's own MAX_TRIES is the real limit (the
# message's count restarts when the cron resends it), so max_retries only has to reach it.
# Permanent errors are recorded and the message ends normally: nothing to retry.
# The time limit sits above the workflow's timeout, which the run caps below it.
# Restores are interactive work (someone waits for the result); requeued ones go to the bulk queue
# (jobs.attempts.attempt_send), declared here so every worker that loads the actors consumes it.
@dramatiq.actor(
    queue_name=settings.DRAMATIQ_QUEUE_INTERACTIVE,
    priority=settings.DRAMATIQ_PRIORITY["interactive"],
    max_retries=settings.MAX_TRIES,
    min_backoff=settings.RETRY_MIN_BACKOFF_MS,
    max_backoff=settings.RETRY_MAX_BACKOFF_MS,
    time_limit=settings.RESTORE_TIME_LIMIT_SECONDS * 1000,
)
def process_restoration(attempt_id: str) -> None:
    try:
        restore_attempt_process(attempt_id=attempt_id)
    except AttemptRetry as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from exc


dramatiq.get_broker().declare_queue(settings.DRAMATIQ_QUEUE_BULK)
