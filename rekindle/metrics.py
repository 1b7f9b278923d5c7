"""Prometheus metrics of the service's own work: attempts, engine and storage errors, webhooks, throttles.

Defined once here, on prometheus_client's default registry, and counted where the thing happens
(``jobs.attempts``, ``jobs.runner``, ``rekindle.api_errors``, ``billing.webhooks``,
``rekindle.throttling``); the fleet's own metrics are in ``rekindle.engines.comfyui.metrics``.
``/metrics`` (``rekindle.ops``) exposes them with django-prometheus' HTTP metrics, and adds the
attempts queued and running per kind, read from the database at each scrape.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn's workers, several ``rundramatiq`` processes)
every process writes its values to files there and a scrape adds them up, so the counters and
histograms are the service's whole, whichever process answers. The README's "Operations"
section lists every metric and what an alert on it means.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Histogram

# Seconds: from a fast restore on an idle pool to an HD run that waited behind others.
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

ATTEMPT_TRANSITIONS = Counter(
    "rekindle_attempt_transitions_total",
    "Attempts that moved into a status (queued, running, succeeded, failed, canceled), by kind.",
    ["kind", "status"],
)
ATTEMPT_QUEUE_WAIT = Histogram(
    "rekindle_attempt_queue_wait_seconds",
    "From when the attempt entered the queue (asked for, retried or requeued) to a worker's claim.",
    ["kind"],
    buckets=_DURATION_BUCKETS,
)
ATTEMPT_EXECUTION = Histogram(
    "rekindle_attempt_execution_seconds",
    "From a worker's claim to the end of that try (succeeded, failed, or back to the queue as retry).",
    ["kind", "outcome"],
    buckets=_DURATION_BUCKETS,
)
ATTEMPT_TOTAL = Histogram(
    "rekindle_attempt_total_seconds",
    "From the request to the attempt's end (succeeded or failed for good), what the person waited.",
    ["kind", "status"],
    buckets=_DURATION_BUCKETS,
)
ENGINE_ERRORS = Counter(
    "rekindle_engine_errors_total",
    "Errors that ended a try, by kind, error type (the attempt's error code) and category.",
    ["kind", "error_type", "category"],
)
STORAGE_ERRORS = Counter(
    "rekindle_storage_errors_total",
    "Storage (S3) failures that reached a worker's run or an API request.",
    ["where", "error_type"],
)
WEBHOOK_EVENTS = Counter(
    "rekindle_webhook_events_total",
    "Stripe webhook events by type and what billing did with them.",
    ["event_type", "outcome"],
)
THROTTLE_REFUSALS = Counter(
    "rekindle_throttle_refusals_total",
    "Requests refused with 429, by throttle scope and what was counted (ip or user).",
    ["scope", "identity"],
)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds, or None when either is unknown or they are out of order (clock skew)."""
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None
