"""Selectors behind the staff dashboard: attempts per day by status, failure rate, durations, node time.

Every run of every kind counts (``jobs.kinds``): restore attempts, animation previews
and HD results, each with its own workflow, node and timings. Runs are placed
on the day they were queued (UTC). Durations are ``finished_at - started_at``: time on
the node including upload and download, which is what a GPU node is busy for.

Money (``billing.selectors``): revenue per day and currency, net of refunds, on the day
it was paid; HD conversion is HD results bought through Stripe (not refunded) over
animation previews made (succeeded), in the same days.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.selectors import hd_bought_by_day, previews_made_by_day, revenue_by_day
from jobs.kinds import attempt_kinds
from jobs.models import AttemptStatus

STATUS_ORDER = [
    AttemptStatus.SUCCEEDED,
    AttemptStatus.FAILED,
    AttemptStatus.CANCELED,
    AttemptStatus.RUNNING,
    AttemptStatus.QUEUED,
]


@dataclass(frozen=True)
class WorkflowDurations:
    workflow: str
    runs: int
    median_seconds: float
    p95_seconds: float


@dataclass
class DashboardStats:
    days: list[date]
    # status -> runs queued on each of ``days``
    per_day: dict[str, list[int]]
    # failed / (succeeded + failed) per day, in percent; nan on a day with no finished run
    failure_rate: list[float]
    durations: list[WorkflowDurations]
    # (node, seconds busy), busiest first
    node_seconds: list[tuple[str, float]]
    totals: dict[str, int] = field(default_factory=dict)
    # currency -> net revenue (smallest unit) on each of ``days``
    revenue: dict[str, list[int]] = field(default_factory=dict)
    hd_bought: list[int] = field(default_factory=list)
    previews_made: list[int] = field(default_factory=list)

    @property
    def hd_conversion(self) -> float | None:
        """HD results bought per preview made over the period, in percent; None with no preview."""
        previews = sum(self.previews_made)
        return 100.0 * sum(self.hd_bought) / previews if previews else None

    @property
    def total_runs(self) -> int:
        return sum(self.totals.values())

    @property
    def overall_failure_rate(self) -> float | None:
        finished = self.totals.get(AttemptStatus.SUCCEEDED, 0) + self.totals.get(AttemptStatus.FAILED, 0)
        if not finished:
            return None
        return 100.0 * self.totals.get(AttemptStatus.FAILED, 0) / finished


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0-1) of already sorted values, interpolated linearly."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(sorted_values[low])
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low))


def _day_counts(since: datetime) -> Iterable[tuple[date, str, int]]:
    for kind in attempt_kinds():
        yield from (
            kind.rows()
            .filter(queued_at__gte=since)
            .annotate(day=TruncDate("queued_at"))
            .values_list("day", "status")
            .annotate(n=Count("id"))
            .order_by()
        )


# (workflow, node, status, started_at, finished_at)
Run = tuple[str, str, str, datetime, datetime]


def _finished_runs(since: datetime) -> Iterable[Run]:
    for kind in attempt_kinds():
        for workflow, node, status, started, finished in (
            kind.rows()
            .filter(finished_at__gte=since, started_at__isnull=False)
            .values_list("workflow", "node", "status", "started_at", "finished_at")
        ):
            if started is not None and finished is not None:
                yield workflow, node, status, started, finished


def dashboard_stats(*, days: int | None = None, now: datetime | None = None) -> DashboardStats:
    """The dashboard's figures over the last ``days`` days (``DASHBOARD_DAYS`` by default), today included."""
    span = days or settings.DASHBOARD_DAYS
    today = (now or timezone.now()).astimezone(timezone.get_current_timezone()).date()
    day_list = [today - timedelta(days=offset) for offset in range(span - 1, -1, -1)]
    since = timezone.make_aware(datetime.combine(day_list[0], datetime.min.time()))
    index = {day: i for i, day in enumerate(day_list)}

    per_day: dict[str, list[int]] = {status: [0] * span for status in STATUS_ORDER}
    totals: dict[str, int] = defaultdict(int)
    for day, status, count in _day_counts(since):
        if day in index and status in per_day:
            per_day[status][index[day]] += count
            totals[status] += count

    failure_rate = []
    for i in range(span):
        ok, failed = per_day[AttemptStatus.SUCCEEDED][i], per_day[AttemptStatus.FAILED][i]
        failure_rate.append(100.0 * failed / (ok + failed) if ok + failed else math.nan)

    durations_by_workflow: dict[str, list[float]] = defaultdict(list)
    node_seconds: dict[str, float] = defaultdict(float)
    for workflow, node, status, started, finished in _finished_runs(since):
        seconds = max((finished - started).total_seconds(), 0.0)
        node_seconds[node or "(unknown)"] += seconds
        if status == AttemptStatus.SUCCEEDED:
            durations_by_workflow[workflow].append(seconds)

    durations = []
    for workflow, values in sorted(durations_by_workflow.items()):
        values.sort()
        durations.append(WorkflowDurations(workflow, len(values), percentile(values, 0.5), percentile(values, 0.95)))

    revenue: dict[str, list[int]] = defaultdict(lambda: [0] * span)
    for day, currency, amount in revenue_by_day(since):
        if day in index:
            revenue[currency][index[day]] += amount
    hd_bought, previews_made = [0] * span, [0] * span
    for day, count in hd_bought_by_day(since):
        if day in index:
            hd_bought[index[day]] += count
    for day, count in previews_made_by_day(since):
        if day in index:
            previews_made[index[day]] += count

    return DashboardStats(
        days=day_list,
        per_day=per_day,
        failure_rate=failure_rate,
        durations=durations,
        node_seconds=sorted(node_seconds.items(), key=lambda item: (-item[1], item[0])),
        totals=dict(totals),
        revenue=dict(sorted(revenue.items())),
        hd_bought=hd_bought,
        previews_made=previews_made,
    )
