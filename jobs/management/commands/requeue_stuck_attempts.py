"""Put back attempts whose worker died, resend those the broker never got, fail those out of tries (for cron)."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from jobs.attempts import attempt_handle_one_stuck, attempt_take_back_orphans
from jobs.kinds import attempt_kinds
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = (
        "Take back at once the running attempts of this host's worker processes that are gone; requeue running "
        "attempts whose lease ran out (their worker died), or fail them when their tries are "
        "spent; resend queued attempts whose message never reached the broker or went out longer than "
        "QUEUED_RESEND_SECONDS ago. Safe to run twice at once: each attempt is taken with SKIP LOCKED."
    )
    default_interval: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actions: Counter[str] = Counter()

    def handle_one(self) -> bool:
        """Deal with one stuck attempt of any kind (this host's dead workers' first); False when none is left."""
        for kind in attempt_kinds():
            taken = attempt_take_back_orphans(kind.model)
            if taken:
                self.actions["taken back"] += len(taken)
                return True
        for kind in attempt_kinds():
            outcome = attempt_handle_one_stuck(kind.model)
            if outcome is not None:
                self.actions[outcome.action] += 1
                return True
        return False

    def summary(self) -> str:
        taken = f"taken back {self.actions['taken back']}, " if self.actions["taken back"] else ""
        return taken + (
            f"requeued {self.actions['requeued']}, "
            f"resent {self.actions['resent']}, "
            f"failed {self.actions['failed']} attempt(s)"
        )
