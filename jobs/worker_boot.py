"""A Dramatiq middleware: a worker process, once booted, takes back the attempts of this host's dead workers.

Listed in ``DRAMATIQ_BROKER["MIDDLEWARE"]``. A worker killed with ``kill -9`` is usually
restarted at once by its supervisor; the new process sees that the old one is gone
(``jobs.processes``) and puts its running attempts back in the queue, so a kill costs
seconds, not a lease. ``requeue_stuck_attempts`` does the same each round.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from django.db import DatabaseError

logger = logging.getLogger(__name__)


class TakeBackOrphanedAttempts(dramatiq.Middleware):
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Imported here: the broker, and so this middleware, is made while Django still loads its apps.
        from jobs.attempts import attempt_take_back_orphans
        from jobs.kinds import attempt_kinds

        try:
            taken = sum(len(attempt_take_back_orphans(kind.model)) for kind in attempt_kinds())
        except DatabaseError:
            # The database is away: the lease and the cron's sweep remain.
            logger.warning("attempt.take_back_failed", exc_info=True)
            return
        if taken:
            logger.warning("attempt.taken_back_at_boot count=%d", taken)
