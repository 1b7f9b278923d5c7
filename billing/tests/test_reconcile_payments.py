"""reconcile_payments: Stripe's list of recent Checkout Sessions repairs what missed webhooks left behind."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from animation.models import AnimationAttempt, HDAttempt
from animation.tasks import generate_hd_result
from billing.management.commands.reconcile_payments import Command
from billing.models import Purchase, PurchaseStatus
from billing.services import checkout_for_animation
from rekindle.testing.factories import AnimationAttemptFactory
from rekindle.testing.stripe_stub import StripeStub, WebhookSender

pytestmark = pytest.mark.django_db


def _checked_out() -> tuple[AnimationAttempt, str]:
    animation = AnimationAttemptFactory.create(succeeded=True)
    return animation, checkout_for_animation(job=animation.job, animation_id=animation.pk).session_id


def reconcile(*args: str) -> str:
    out = io.StringIO()
    call_command("reconcile_payments", *args, stdout=out)
    return out.getvalue()


def test_it_pays_a_session_paid_in_stripe_whose_webhook_never_came(
    stripe_stub: StripeStub, stripe_webhooks: WebhookSender, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    animation, session_id = _checked_out()
    _, unpaid_id = _checked_out()
    session = stripe_stub.pay(session_id)  # ... and the webhook is lost

    with django_capture_on_commit_callbacks(execute=True):
        output = reconcile()

    purchase = Purchase.objects.get(stripe_session_id=session_id)
    assert purchase.status == PurchaseStatus.PAID
    animation.refresh_from_db()
    assert animation.hd_paid
    hd = HDAttempt.objects.get(animation=animation)
    assert queued.calls(generate_hd_result.queue_name) == [("generate_hd_result", str(hd.pk))]
    assert f"fixed purchase #{purchase.pk} (session {session_id}): pending -> paid (9.00 USD); HD run queued" in output
    assert "checked 2 Checkout Session(s) of the last 72 h, fixed 1" in output
    assert Purchase.objects.get(stripe_session_id=unpaid_id).status == PurchaseStatus.PENDING

    # Again: nothing left to fix; and the webhook, when it comes at last, changes nothing either.
    with django_capture_on_commit_callbacks(execute=True):
        assert "fixed 0" in reconcile()
        stripe_webhooks.deliver("checkout.session.completed", session)
    assert Purchase.objects.get(stripe_session_id=session_id).status == PurchaseStatus.PAID
    assert len(queued.calls(generate_hd_result.queue_name)) == 1


def test_it_refunds_what_was_refunded_in_stripe_but_not_here(
    stripe_stub: StripeStub, stripe_webhooks: WebhookSender, django_capture_on_commit_callbacks: Any
) -> None:
    animation, session_id = _checked_out()
    with django_capture_on_commit_callbacks(execute=True):
        stripe_webhooks.deliver("checkout.session.completed", stripe_stub.pay(session_id))
    stripe_stub.refund(session_id)  # from Stripe's dashboard; the charge.refunded webhook is lost

    with django_capture_on_commit_callbacks(execute=True):
        output = reconcile()

    purchase = Purchase.objects.get(stripe_session_id=session_id)
    assert (purchase.status, purchase.amount_refunded) == (PurchaseStatus.REFUNDED, 900)
    animation.refresh_from_db()
    assert not animation.hd_paid
    assert "refunded: 9.00 USD refunded; HD result taken back" in output


def test_it_records_a_paid_session_this_database_never_heard_of(
    stripe_stub: StripeStub, django_capture_on_commit_callbacks: Any
) -> None:
    animation, session_id = _checked_out()
    stripe_stub.pay(session_id)
    Purchase.objects.all().delete()  # the checkout died after Stripe answered

    with django_capture_on_commit_callbacks(execute=True):
        output = reconcile()

    purchase = Purchase.objects.get(stripe_session_id=session_id)
    assert (purchase.animation, purchase.status) == (animation, PurchaseStatus.PAID)
    assert "fixed 1" in output


def test_it_expires_what_expired_and_leaves_sessions_that_are_not_ours_alone(stripe_stub: StripeStub) -> None:
    _, session_id = _checked_out()
    stripe_stub.expire(session_id)
    stripe_stub.handle(
        "POST",
        "/v1/checkout/sessions",
        {
            "mode": "payment",
            "success_url": "https://x",
            "cancel_url": "https://x",
            "line_items": [{"price": "price_hd_test"}],
        },
        "",
    )

    output = reconcile("--hours", "1")

    assert Purchase.objects.get(stripe_session_id=session_id).status == PurchaseStatus.EXPIRED
    assert Purchase.objects.count() == 1
    assert "checked 2 Checkout Session(s) of the last 1 h, fixed 1" in output


def test_it_does_one_session_per_unit_of_work(stripe_stub: StripeStub) -> None:
    for _ in range(3):
        _checked_out()
    command = Command()
    command.setup(hours=None)
    command.round_started()

    assert [command.handle_one() for _ in range(4)] == [True, True, True, False]
    assert command.checked == 3
    assert stripe_stub.calls("GET", "/v1/checkout/sessions") == ["/v1/checkout/sessions"]


def test_it_fails_when_stripe_cannot_be_reached(stripe_stub: StripeStub) -> None:
    _checked_out()
    stripe_stub.down = True

    with pytest.raises(CommandError) as failed:
        reconcile()

    assert "payment_provider_unavailable" in str(failed.value) or "payment provider" in str(failed.value)


def test_it_says_so_when_payments_are_not_set_up(settings: Any) -> None:
    settings.STRIPE_SECRET_KEY = ""

    with pytest.raises(CommandError, match="STRIPE_SECRET_KEY"):
        reconcile()
