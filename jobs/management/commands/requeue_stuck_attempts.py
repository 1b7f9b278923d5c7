"""Put back attempts whose worker died, resend what the broker never got or lost, fail those out of tries (for cron).

Also sends again the owed removals of deleted jobs' files (``jobs.cleanups``): the same
outbox problem, so the loop that already runs for attempts keeps those moving too.

Each round first asks the broker when its Redis started: a queued attempt (or owed
cleanup) sent before that may have lost its message in the restart and is sent again.
When the broker refuses a send, the rest of the round sends nothing more (it is down;
each try would only wait for its connection timeout); attempts whose lease ran out are
still put back, and everything unsent stays due for the next round, which comes
``--interval`` seconds later (5 by default), so work that missed the broker moves within
seconds of it coming back.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

from jobs.attempts import attempt_handle_one_stuck, attempt_take_back_orphans
from jobs.cleanups import file_cleanup_send, file_cleanup_take_one_owed
from jobs.kinds import attempt_kinds
from rekindle.broker import broker_started_at
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = (
        "Take back at once the running attempts of this host's worker processes that are gone; requeue running "
        "attempts whose lease ran out (their worker died), or fail them when their tries are "
        "spent; resend queued attempts whose message never reached the broker, went out longer than "
        "QUEUED_RESEND_SECONDS ago, was sent before the broker's Redis restarted, or whose retry is "
        "RETRY_OVERDUE_SECONDS late; resend owed file cleanups of deleted jobs. Safe to run twice at once."
    )
    default_interval: ClassVar[float] = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actions: Counter[str] = Counter()
        self.broker_since: datetime | None = None
        self.broker_down = False
        self._cleanups_tried: set[int] = set()
        self._round_open = False

    def round_started(self) -> None:
        self.broker_since = broker_started_at()
        self.broker_down = False
        self._cleanups_tried = set()
        self._round_open = True

    def handle_one(self) -> bool:
        """Deal with one stuck attempt of any kind (this host's dead workers' first), or one owed cleanup.

        False when none is left.
        """
        if not self._round_open:
            self.round_started()
        for kind in attempt_kinds():
            taken = attempt_take_back_orphans(kind.model)
            if taken:
                self.actions["taken back"] += len(taken)
                return True
        for kind in attempt_kinds():
            outcome = attempt_handle_one_stuck(kind.model, resend=not self.broker_down, broker_since=self.broker_since)
            if outcome is not None:
                self.actions[outcome.action] += 1
                if outcome.action == "unsent":
                    self.broker_down = True
                return True
        if self.broker_down:
            self._round_open = False
            return False
        return self._resend_one_cleanup()

    def _resend_one_cleanup(self) -> bool:
        cleanup_id = file_cleanup_take_one_owed(exclude=self._cleanups_tried, broker_since=self.broker_since)
        if cleanup_id is None:
            self._round_open = False
            return False
        self._cleanups_tried.add(cleanup_id)
        if file_cleanup_send(cleanup_id):
            self.actions["cleanups_resent"] += 1
        else:
            self.actions["cleanups_unsent"] += 1
            self.broker_down = True
        return True

    def summary(self) -> str:
        taken = f"taken back {self.actions['taken back']}, " if self.actions["taken back"] else ""
        line = taken + (
            f"requeued {self.actions['requeued']}, resent {self.actions['resent']}, "
            f"failed {self.actions['failed']} attempt(s)"
        )
        if self.actions["unsent"]:
            line += f"; {self.actions['unsent']} not sent (broker unreachable)"
        if self.actions["cleanups_resent"] or self.actions["cleanups_unsent"]:
            line += f"; file cleanups resent {self.actions['cleanups_resent']}"
            if self.actions["cleanups_unsent"]:
                line += f", {self.actions['cleanups_unsent']} not sent (broker unreachable)"
        return line
