"""Billing's words in emails: the amount paid in the HD video's ready email, and the refund notice."""

from __future__ import annotations

import pytest
from django.core import mail

from billing.models import Purchase, PurchaseKind, PurchaseStatus
from billing.notifications import refund_notice_send
from jobs.models import AttemptStatus
from jobs.notifications import job_ready_email_send
from rekindle.testing.factories import HDAttemptFactory, PurchaseFactory

pytestmark = pytest.mark.django_db


def test_it_says_what_was_paid_in_the_hd_videos_ready_email() -> None:
    purchase = PurchaseFactory.create(paid=True, amount=1299, currency="eur")
    hd = HDAttemptFactory.create(animation=purchase.animation, status=AttemptStatus.SUCCEEDED)

    assert job_ready_email_send(attempt=hd)

    [message] = mail.outbox
    assert message.subject == "Your HD video is ready"
    assert "Your HD video is ready. You paid 12.99 EUR for it." in message.body
    assert "You paid 12.99 EUR for it." in str(message.alternatives[0][0])  # type: ignore[attr-defined]


def test_it_says_no_amount_for_a_comp_or_a_zero_decimal_currency_wrongly() -> None:
    comp = PurchaseFactory.create(kind=PurchaseKind.COMP, status=PurchaseStatus.PAID, amount=0, currency="")
    yen = PurchaseFactory.create(paid=True, amount=1200, currency="jpy")
    for purchase in (comp, yen):
        job_ready_email_send(attempt=HDAttemptFactory.create(animation=purchase.animation, status="succeeded"))

    comp_mail, yen_mail = mail.outbox
    assert "You paid" not in comp_mail.body
    assert "You paid 1200 JPY for it." in yen_mail.body


def test_it_sends_a_refund_notice_in_full_or_in_part() -> None:
    full = PurchaseFactory.create(status=PurchaseStatus.REFUNDED, amount_refunded=900)
    part = PurchaseFactory.create(status=PurchaseStatus.PARTIALLY_REFUNDED, amount_refunded=250)

    assert refund_notice_send(purchase_id=full.pk)
    assert refund_notice_send(purchase_id=part.pk)
    assert not refund_notice_send(purchase_id=PurchaseFactory.create(paid=True).pk)  # nothing refunded

    full_mail, part_mail = mail.outbox
    assert full_mail.to == [full.email]
    assert "We refunded your payment of 9.00 USD for the HD video. It is no longer available" in full_mail.body
    assert part_mail.subject == "Part of your payment for the HD video was refunded"
    assert "We refunded 2.50 USD of your payment of 9.00 USD for the HD video. You keep the HD video." in part_mail.body
    assert f"/j/{part.job_id}?access=" in part_mail.body
    assert Purchase.objects.count() == 3
