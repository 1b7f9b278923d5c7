"""Put back attempts whose worker died, resend those the broker never got, fail those out of tries (for cron)."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from jobs.attempts import attempt_handle_one_stuck
from jobs.kinds import attempt_kinds
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = (
        "Requeue running attempts whose lease ran out (their worker died), or fail them when their tries are "
        "spent; resend queued attempts whose message never reached the broker or went out longer than "
        "QUEUED_RESEND_SECONDS ago. Safe to run twice at once: each attempt is taken with SKIP LOCKED."
    )
    default_interval: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actions: Counter[str] = Counter()

    def handle_one(self) -> bool:
        """Deal with one stuck attempt of any kind; False when none is left."""
        for kind in attempt_kinds():
            outcome = attempt_handle_one_stuck(kind.model)
            if outcome is not None:
                self.actions[outcome.action] += 1
                return True
        return False

    def summary(self) -> str:
        return (
            f"requeued {self.actions['requeued']}, resent {self.actions['resent']}, "
            f"failed {self.actions['failed']} attempt(s)"
        )
