"""Repair what missed webhooks left behind, from Stripe's own list of recent Checkout Sessions.

Lists the Checkout Sessions created in the last ``--hours`` (``RECONCILE_PAYMENTS_HOURS``,
72 by default: as long as Stripe keeps retrying a webhook) with their payment and charge,
and brings each purchase in line (``billing.services.payment_reconcile_session``): paid in
Stripe but not here -> paid, HD run queued; refunded in Stripe but not here -> refunded,
HD result taken back; expired or failed likewise. Each fix is printed. One session per
unit of work; the listing is read page by page between units, with no transaction open.
Run it every few minutes (``--loop --interval 600``): with webhooks down for an hour, every
payment of that hour gets its HD video at the next round. Two runs at once: the second
finds the lock held and does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from billing import stripe_api
from billing.services import RECONCILE_EXPAND, billing_enabled, payment_reconcile_session
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = "Repair purchases from Stripe's list of recent Checkout Sessions (missed webhooks); prints each fix."
    lock_name = "reconcile_payments"
    default_interval = 600.0

    def add_cron_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hours",
            type=int,
            default=None,
            help="Look at sessions created this many hours back (default: RECONCILE_PAYMENTS_HOURS).",
        )

    def setup(self, *, hours: int | None = None, **options: Any) -> None:
        if not billing_enabled():
            raise CommandError("Payments are not set up (STRIPE_SECRET_KEY): nothing to reconcile.")
        if hours is not None and hours < 1:
            raise CommandError("--hours must be at least 1")
        self.hours = hours or settings.RECONCILE_PAYMENTS_HOURS
        self.checked = 0
        self.fixed = 0
        self._sessions: Iterator[dict[str, Any]] | None = None

    def round_started(self) -> None:
        since = timezone.now() - timedelta(hours=self.hours)
        self._sessions = stripe_api.checkout_sessions_created_since(int(since.timestamp()), expand=RECONCILE_EXPAND)

    def handle_one(self) -> bool:
        if self._sessions is None:
            self.round_started()
        assert self._sessions is not None
        session = next(self._sessions, None)
        if session is None:
            return False
        self.checked += 1
        for line in payment_reconcile_session(session):
            self.fixed += 1
            self.stdout.write(f"fixed {line}")
        return True

    def summary(self) -> str:
        return f"checked {self.checked} Checkout Session(s) of the last {self.hours} h, fixed {self.fixed}"
