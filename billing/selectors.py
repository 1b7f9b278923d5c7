"""Reads of billing: the staff dashboard's revenue per day and HD conversion."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDate

from animation.models import AnimationAttempt
from billing.models import GRANTS, Purchase, PurchaseKind
from jobs.models import AttemptStatus


def revenue_by_day(since: datetime) -> Iterable[tuple[date, str, int]]:
    """``(day, currency, amount)``: what Stripe payments brought in, net of refunds, on the day they were paid (UTC)."""
    rows = (
        Purchase.objects.filter(kind=PurchaseKind.STRIPE, paid_at__gte=since)
        .annotate(day=TruncDate("paid_at"))
        .values_list("day", "currency")
        .annotate(net=Sum(F("amount") - F("amount_refunded")))
        .order_by()
    )
    return [(day, currency, int(net or 0)) for day, currency, net in rows]


def hd_bought_by_day(since: datetime) -> Iterable[tuple[date, int]]:
    """``(day, n)``: HD results paid for through Stripe (and not refunded), on the day they were paid."""
    rows = (
        Purchase.objects.filter(kind=PurchaseKind.STRIPE, paid_at__gte=since)
        .filter(GRANTS)
        .annotate(day=TruncDate("paid_at"))
        .values_list("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return list(rows)


def previews_made_by_day(since: datetime) -> Iterable[tuple[date, int]]:
    """``(day, n)``: animation previews that succeeded, on the day they finished."""
    rows = (
        AnimationAttempt.objects.filter(status=AttemptStatus.SUCCEEDED, finished_at__gte=since)
        .annotate(day=TruncDate("finished_at"))
        .values_list("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return list(rows)
