"""The dashboard's money: revenue per day net of refunds, and HD conversion (HD bought / previews made)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import PurchaseKind, PurchaseStatus
from rekindle.dashboard import dashboard_stats
from rekindle.testing.factories import AnimationAttemptFactory, PurchaseFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.get_current_timezone())


def test_it_counts_revenue_per_day_and_currency_net_of_refunds_and_the_hd_conversion() -> None:
    yesterday, today = NOW - timedelta(days=1), NOW - timedelta(hours=1)
    for at in (yesterday, today, today):
        AnimationAttemptFactory.create(succeeded=True, finished_at=at)
    PurchaseFactory.create(paid=True, paid_at=yesterday, amount=900, currency="usd")
    PurchaseFactory.create(
        paid=True,
        paid_at=today,
        amount=900,
        currency="usd",
        status=PurchaseStatus.PARTIALLY_REFUNDED,
        amount_refunded=400,
    )
    PurchaseFactory.create(paid=True, paid_at=today, status=PurchaseStatus.REFUNDED, amount_refunded=900)
    PurchaseFactory.create(paid=True, paid_at=today, amount=1500, currency="eur")
    PurchaseFactory.create(kind=PurchaseKind.COMP, status=PurchaseStatus.PAID, paid_at=today, amount=0, currency="")
    PurchaseFactory.create(paid=True, paid_at=NOW - timedelta(days=30))  # outside the window

    stats = dashboard_stats(days=3, now=NOW)

    assert stats.revenue == {"eur": [0, 0, 1500], "usd": [0, 900, 500]}
    # Bought: paid, partly refunded (kept) and paid in euros; the refunded one and the comp do not count.
    assert stats.hd_bought == [0, 1, 2]
    # The three previews above (the purchases' own previews finished at the real now, past NOW).
    assert stats.previews_made == [0, 1, 2]
    assert stats.hd_conversion == pytest.approx(100.0)


def test_it_shows_revenue_and_conversion_on_the_dashboard(admin_client: Client) -> None:
    AnimationAttemptFactory.create(succeeded=True)
    PurchaseFactory.create(paid=True, amount=1234, currency="usd")

    body = admin_client.get(reverse("rekindle-admin-dashboard")).content.decode()

    assert "Revenue per day (net of refunds)" in body
    assert "12.34 USD" in body
    assert "HD conversion" in body
    assert "50.0%" in body  # one HD bought, two previews made (the purchase's own and the other)
