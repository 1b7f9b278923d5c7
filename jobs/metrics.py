"""Metrics of the jobs app read at scrape time: the attempts queued and running now, per kind.

Counted in the database at each scrape of ``/metrics`` (registered with ``rekindle.ops`` from
``JobsConfig.ready()``), so the value is the truth whichever process answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class AttemptsInFlightCollector(Collector):
    """``rekindle_attempts_in_flight{kind, status}``: queued and running attempts now (the queue's depth).

    Read from the database at each scrape, one grouped count per kind, so it is the truth whichever
    process answers; without a database the scrape still answers, without it.
    """

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        from jobs.kinds import attempt_kinds
        from jobs.models import IN_FLIGHT_STATUSES

        family = GaugeMetricFamily(
            "rekindle_attempts_in_flight", "Attempts queued or running now, by kind.", labels=["kind", "status"]
        )
        try:
            for kind in attempt_kinds():
                counted = dict(
                    kind.rows()
                    .filter(status__in=IN_FLIGHT_STATUSES)
                    .order_by()
                    .values_list("status")
                    .annotate(n=Count("pk"))
                    .values_list("status", "n")
                )
                for status in IN_FLIGHT_STATUSES:
                    family.add_metric([kind.name, str(status)], float(counted.get(str(status), 0)))
        except DatabaseError:
            logger.warning("metrics.in_flight_unavailable", exc_info=True)
            return
        yield family
