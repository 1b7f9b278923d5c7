"""How full the queues are: each queued attempt's place and estimated start and finish, and refusing new work.

Estimates come from what the pool measurably did lately, per priority queue (``paid``,
``interactive``, ``bulk``: an attempt requeued by staff or the cron waits in ``bulk``): the
attempts that finished in the last ``QUEUE_THROUGHPUT_WINDOW_SECONDS`` give completions per
second and the mean run time; the attempts running now and the rate give the slots in use
(Little's law: slots = rate x run time, at least the running count, at least one). An attempt
with ``ahead`` attempts of its queue queued before it starts after ``ahead + running - slots + 1``
completions, and finishes a mean run time later. With no history a run is taken to last
``QUEUE_DEFAULT_RUN_SECONDS`` on one slot.

One :class:`QueueSnapshot` (a few aggregate queries per kind) serves a whole request and is kept
``QUEUE_ESTIMATE_CACHE_SECONDS`` in the process, so a job with many attempts costs no query per
attempt. New restores and animations are refused (503 ``queue_full`` with ``Retry-After``) when
their queue holds ``QUEUE_MAX_DEPTH`` attempts or the new one would start later than
``QUEUE_MAX_WAIT_SECONDS``; paid work is never refused.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F
from django.utils import timezone
from prometheus_client import Counter

from jobs.customer_errors import QUEUE_FULL, REFUSAL_MESSAGES
from jobs.kinds import AttemptKind, attempt_kinds, kind_named, kind_of
from jobs.models import Attempt, AttemptStatus
from rekindle.errors import Unavailable

QUEUE_FULL_REFUSALS = Counter(
    "rekindle_queue_full_refusals_total",
    "New work refused with 503 queue_full, by priority queue and reason (depth or wait).",
    ["queue", "reason"],
)


class QueueFull(Unavailable):
    code = QUEUE_FULL
    message = REFUSAL_MESSAGES[QUEUE_FULL]


@dataclass
class QueueStats:
    """One priority queue's recent throughput and what waits in it."""

    name: str
    completions: int = 0
    run_seconds_total: float = 0.0
    running: int = 0
    # When each queued attempt of the queue was queued, sorted.
    queued_at: list[datetime] = field(default_factory=list)

    def rate(self) -> float:
        """Completions per second over the window (None of history: one slot at the default run time)."""
        if self.completions == 0:
            return 1.0 / self.run_seconds()
        return self.completions / float(settings.QUEUE_THROUGHPUT_WINDOW_SECONDS)

    def run_seconds(self) -> float:
        if self.completions == 0:
            return float(settings.QUEUE_DEFAULT_RUN_SECONDS)
        return max(self.run_seconds_total / self.completions, 0.001)

    def slots(self) -> float:
        return max(self.rate() * self.run_seconds(), float(self.running), 1.0)

    def wait_seconds(self, ahead: int) -> float:
        """Seconds until an attempt with ``ahead`` queued before it starts."""
        completions_needed = ahead + self.running - self.slots() + 1
        return max(completions_needed, 0.0) / self.rate()


@dataclass(frozen=True)
class QueueEstimate:
    position: int  # 1 for the next to start
    estimated_start: datetime
    estimated_finish: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "estimated_start": self.estimated_start,
            "estimated_finish": self.estimated_finish,
        }


@dataclass
class QueueSnapshot:
    taken_at: datetime
    queues: dict[str, QueueStats]

    def estimate(self, attempt: Attempt) -> QueueEstimate | None:
        """Where a queued attempt stands; None for one that is not queued."""
        if attempt.status != AttemptStatus.QUEUED:
            return None
        stats = self.queues.get(queue_of(attempt)) or QueueStats(queue_of(attempt))
        ahead = bisect.bisect_left(stats.queued_at, attempt.queued_at)
        start = self.taken_at + timedelta(seconds=stats.wait_seconds(ahead))
        return QueueEstimate(
            position=ahead + 1,
            estimated_start=start,
            estimated_finish=start + timedelta(seconds=stats.run_seconds()),
        )


def kind_queue(kind: AttemptKind) -> str:
    return str(getattr(kind.actor, "queue_name", settings.DRAMATIQ_QUEUE_INTERACTIVE))


def queue_of(attempt: Attempt) -> str:
    """The priority queue an attempt waits in: its actor's, or bulk once requeued (paid stays paid)."""
    queue = kind_queue(kind_of(attempt))
    if attempt.tries_at_requeue > 0 and queue != settings.DRAMATIQ_QUEUE_PAID:
        return str(settings.DRAMATIQ_QUEUE_BULK)
    return queue


def _measure() -> QueueSnapshot:
    now = timezone.now()
    since = now - timedelta(seconds=int(settings.QUEUE_THROUGHPUT_WINDOW_SECONDS))
    queues: dict[str, QueueStats] = {}
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    for kind in attempt_kinds():
        own = kind_queue(kind)
        rows = kind.rows()
        finished = rows.filter(
            status__in=(AttemptStatus.SUCCEEDED, AttemptStatus.FAILED),
            finished_at__gte=since,
            started_at__isnull=False,
        ).aggregate(n=Count("pk"), mean=Avg(duration))
        stats = queues.setdefault(own, QueueStats(own))
        n = int(finished["n"] or 0)
        mean = finished["mean"]
        stats.completions += n
        stats.run_seconds_total += n * (mean.total_seconds() if mean is not None else 0.0)
        stats.running += rows.filter(status=AttemptStatus.RUNNING).count()
        for queued_at, requeued in rows.filter(status=AttemptStatus.QUEUED).values_list(
            "queued_at", "tries_at_requeue"
        ):
            name = settings.DRAMATIQ_QUEUE_BULK if requeued > 0 and own != settings.DRAMATIQ_QUEUE_PAID else own
            queues.setdefault(name, QueueStats(name)).queued_at.append(queued_at)
    for stats in queues.values():
        stats.queued_at.sort()
    return QueueSnapshot(taken_at=now, queues=queues)


_lock = threading.Lock()
_cached: tuple[float, QueueSnapshot] | None = None


def queue_snapshot() -> QueueSnapshot:
    """The queues as measured at most ``QUEUE_ESTIMATE_CACHE_SECONDS`` ago (this process's copy)."""
    global _cached
    keep = float(settings.QUEUE_ESTIMATE_CACHE_SECONDS)
    with _lock:
        if _cached is not None and time.monotonic() - _cached[0] < keep:
            return _cached[1]
    snapshot = _measure()
    with _lock:
        _cached = (time.monotonic(), snapshot)
    return snapshot


def queue_admit(kind_name: str) -> None:
    """Refuse (503 ``queue_full``, with ``Retry-After``) a new attempt of ``kind_name`` its queue has no room for.

    Read fresh, not from the cache, so a burst cannot slip past the limit on a stale count.
    Paid work is never refused: the money is taken.
    """
    queue = kind_queue(kind_named(kind_name))
    if queue == settings.DRAMATIQ_QUEUE_PAID:
        return
    stats = _measure().queues.get(queue) or QueueStats(queue)
    depth = len(stats.queued_at)
    wait = stats.wait_seconds(depth)
    max_depth = int(settings.QUEUE_MAX_DEPTH)
    max_wait = int(settings.QUEUE_MAX_WAIT_SECONDS)
    reason = ""
    if max_depth and depth >= max_depth:
        reason = "depth"
        # Room comes back once the queue is below its limit again.
        retry_after = (depth - max_depth + 1) / stats.rate()
    elif max_wait and wait > max_wait:
        reason = "wait"
        retry_after = wait - max_wait
    if not reason:
        return
    QUEUE_FULL_REFUSALS.labels(queue=queue, reason=reason).inc()
    seconds = max(math.ceil(retry_after), 1)
    raise QueueFull(
        details={"queue": queue, "queued": depth, "estimated_wait_seconds": math.ceil(wait)},
        retry_after=seconds,
    )
