"""Stripe's webhooks, signed with Stripe's scheme and posted to /stripe/webhook/: each event applied once, in any order.

Events are made by the Stripe stub from its own objects (a session it created and the
customer paid, the charge it refunded) and posted over HTTP with the test client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.core import mail
from djstripe.models import Event, WebhookEventTrigger
from rest_framework.test import APIClient

from animation.models import AnimationAttempt, HDAttempt
from animation.tasks import generate_hd_result
from billing import stripe_api
from billing.models import PaymentEvent, PaymentEventOutcome, Purchase, PurchaseStatus
from billing.services import checkout_for_animation, checkout_session_params
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import AnimationAttemptFactory, token_of
from rekindle.testing.stripe_stub import StripeStub, WebhookSender, signature_header

pytestmark = pytest.mark.django_db


class Payments:
    """One animation checked out through the real service, and the webhooks about it."""

    def __init__(
        self,
        stub: StripeStub,
        webhooks: WebhookSender,
        queued: Any,
        on_commit: Callable[..., AbstractContextManager[Any]],
    ) -> None:
        self.stub, self.webhooks, self.queued, self.on_commit = stub, webhooks, queued, on_commit
        self.animation = AnimationAttemptFactory.create(succeeded=True)
        self.job = self.animation.job
        self.session_id = checkout_for_animation(job=self.job, animation_id=self.animation.pk).session_id

    def send(self, event: dict[str, Any]) -> Any:
        with self.on_commit(execute=True):
            return self.webhooks.send(event)

    def deliver(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = self.stub.event(event_type, obj)
        response = self.send(event)
        assert response.status_code == 200, response.content[:500]
        return event

    @property
    def purchase(self) -> Purchase:
        return Purchase.objects.get(stripe_session_id=self.session_id)

    def hd_paid(self) -> bool:
        return bool(AnimationAttempt.objects.get(pk=self.animation.pk).hd_paid)

    def hd_runs_queued(self) -> list[str]:
        return [args for name, args in self.queued.calls(generate_hd_result.queue_name) if name == "generate_hd_result"]

    def hd_url(self) -> str | None:
        body = APIClient().get(f"/api/v1/jobs/{self.job.id}", headers={"X-Job-Token": token_of(self.job)}).json()
        [animation] = body["animation_attempts"]
        url: str | None = animation["hd_result_url"]
        return url


@pytest.fixture
def payments(
    stripe_stub: StripeStub, stripe_webhooks: WebhookSender, queued: Any, django_capture_on_commit_callbacks: Any
) -> Iterator[Payments]:
    yield Payments(stripe_stub, stripe_webhooks, queued, django_capture_on_commit_callbacks)
    assert stripe_stub.unknown_requests == []


def _nothing_stored() -> None:
    assert not WebhookEventTrigger.objects.exists()
    assert not Event.objects.exists()
    assert not PaymentEvent.objects.exists()


# --- The signature ----------------------------------------------------------------------


def test_it_refuses_a_bad_signature_and_stores_nothing(payments: Payments) -> None:
    event = payments.stub.event("checkout.session.completed", payments.stub.pay(payments.session_id))
    payload = json.dumps(event)

    for signature in (
        None,
        "",
        "garbage",
        signature_header(payload, secret="whsec_someone_else_entirely_0000"),
        signature_header(payload + " ", secret=payments.stub.webhook_secret),
        "t=" + str(int(time.time())) + ",v0=" + "0" * 64,
    ):
        response = payments.webhooks.post(payload, signature=signature)
        assert response.status_code == 400, signature
        assert response.json()["error"]["code"] == "bad_signature"

    _nothing_stored()
    assert payments.purchase.status == PurchaseStatus.PENDING
    assert not payments.hd_paid()


def test_it_refuses_a_stale_timestamp_and_stores_nothing(payments: Payments) -> None:
    event = payments.stub.event("checkout.session.completed", payments.stub.pay(payments.session_id))

    response = payments.webhooks.send(event, timestamp=int(time.time()) - 600)

    assert response.status_code == 400
    _nothing_stored()
    assert payments.purchase.status == PurchaseStatus.PENDING


# --- Paid, refunded, replayed ------------------------------------------------------------


def test_it_pays_on_the_completed_webhook_and_queues_the_hd_run_once(payments: Payments) -> None:
    requests_before = len(payments.stub.requests)

    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))

    purchase = payments.purchase
    assert purchase.status == PurchaseStatus.PAID
    assert purchase.paid_at is not None
    assert purchase.stripe_payment_intent_id.startswith("pi_")
    assert payments.hd_paid()
    hd = HDAttempt.objects.get(animation=payments.animation)
    assert purchase.hd == hd
    assert payments.hd_runs_queued() == [str(hd.pk)]
    event = PaymentEvent.objects.get()
    assert (event.outcome, event.purchase, event.needs_attention) == (PaymentEventOutcome.APPLIED, purchase, False)
    assert Event.objects.filter(id=event.stripe_id).exists()  # dj-stripe's record of it
    # No call to Stripe while the webhook was handled, beyond the account dj-stripe needs, fetched once, first.
    assert payments.stub.requests[requests_before:] == [("GET", "/v1/account")]
    # dj-stripe's sync of the objects waits for a worker.
    assert [name for name, _ in payments.queued.calls("billing")] == ["sync_stripe_objects"]


def test_it_takes_the_hd_result_back_on_a_full_refund(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))
    HDAttempt.objects.filter(animation=payments.animation).update(
        status=AttemptStatus.SUCCEEDED, result_key=f"animated/{payments.job.id}/x_result.mp4"
    )
    assert payments.hd_url() is not None

    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id))

    purchase = payments.purchase
    assert (purchase.status, purchase.amount_refunded) == (PurchaseStatus.REFUNDED, 900)
    assert purchase.stripe_charge_id.startswith("ch_")
    assert not payments.hd_paid()
    assert payments.hd_url() is None
    [notice] = [m for m in mail.outbox if "refunded" in m.subject]
    assert notice.to == [payments.job.email]
    assert notice.subject == "Your payment for the HD video was refunded"
    assert "no longer available" in notice.body


def test_it_cancels_an_hd_run_still_going_when_refunded(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))

    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id))

    assert HDAttempt.objects.get(animation=payments.animation).status == AttemptStatus.CANCELED


def test_it_keeps_the_hd_result_on_a_partial_refund(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))

    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id, amount=300))

    purchase = payments.purchase
    assert (purchase.status, purchase.amount_refunded) == (PurchaseStatus.PARTIALLY_REFUNDED, 300)
    assert payments.hd_paid()
    [notice] = [m for m in mail.outbox if "refunded" in m.subject]
    assert "We refunded 3.00 USD of your payment of 9.00 USD" in notice.body

    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id))
    assert payments.purchase.status == PurchaseStatus.REFUNDED
    assert not payments.hd_paid()


def test_it_changes_nothing_when_every_event_comes_again(payments: Payments) -> None:
    events = [
        payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id)),
        payments.deliver("charge.refunded", payments.stub.refund(payments.session_id, amount=100)),
    ]
    dispute = payments.stub.dispute(payments.session_id)
    events.append(payments.deliver("charge.dispute.created", dispute))
    events.append(payments.deliver("charge.dispute.closed", payments.stub.close_dispute(dispute["id"], status="won")))
    before = Purchase.objects.values().get()
    emails, hd_runs, records = len(mail.outbox), payments.hd_runs_queued(), PaymentEvent.objects.count()

    for event in events:
        response = payments.send(event)
        assert response.status_code == 200

    assert Purchase.objects.values().get() == before
    assert (len(mail.outbox), payments.hd_runs_queued(), PaymentEvent.objects.count()) == (emails, hd_runs, records)
    assert WebhookEventTrigger.objects.count() == 2 * len(events)  # dj-stripe logs each delivery
    assert Event.objects.count() == len(events)
    assert payments.hd_paid()


# --- Out of order ---------------------------------------------------------------------------


def test_it_ends_refunded_when_the_refund_comes_before_the_completion(payments: Payments) -> None:
    session = payments.stub.pay(payments.session_id)
    refunded = payments.stub.refund(payments.session_id)

    payments.deliver("charge.refunded", refunded)
    early = PaymentEvent.objects.get()
    assert (early.outcome, early.needs_attention) == (PaymentEventOutcome.UNMATCHED, True)
    payments.deliver("checkout.session.completed", session)

    purchase = payments.purchase
    assert (purchase.status, purchase.amount_refunded) == (PurchaseStatus.REFUNDED, 900)
    assert not payments.hd_paid()
    assert payments.hd_url() is None
    early.refresh_from_db()
    assert (early.purchase, early.outcome, early.needs_attention) == (purchase, PaymentEventOutcome.APPLIED, False)


def test_it_pays_a_completion_that_comes_after_the_expiry(payments: Payments) -> None:
    session = payments.stub.pay(payments.session_id)
    expired = {**session, "status": "expired", "payment_status": "unpaid", "payment_intent": None}

    payments.deliver("checkout.session.expired", expired)
    assert payments.purchase.status == PurchaseStatus.EXPIRED
    payments.deliver("checkout.session.completed", session)

    assert payments.purchase.status == PurchaseStatus.PAID
    assert payments.hd_paid()
    assert len(payments.hd_runs_queued()) == 1


def test_it_stays_paid_when_an_expiry_comes_after_the_completion(payments: Payments) -> None:
    session = payments.stub.pay(payments.session_id)
    payments.deliver("checkout.session.completed", session)

    payments.deliver("checkout.session.expired", {**session, "status": "expired"})

    assert payments.purchase.status == PurchaseStatus.PAID
    assert payments.hd_paid()


def test_it_waits_for_a_slow_payment_then_pays_or_fails(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id, async_payment=True))
    purchase = payments.purchase
    assert (purchase.status, purchase.session_complete) == (PurchaseStatus.PENDING, True)
    assert not payments.hd_paid()
    assert payments.hd_runs_queued() == []

    payments.deliver("checkout.session.async_payment_succeeded", payments.stub.settle_async(payments.session_id))

    assert payments.purchase.status == PurchaseStatus.PAID
    assert payments.hd_paid()
    assert len(payments.hd_runs_queued()) == 1


def test_it_records_a_slow_payment_that_failed(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id, async_payment=True))

    payments.deliver(
        "checkout.session.async_payment_failed", payments.stub.settle_async(payments.session_id, succeeded=False)
    )

    assert payments.purchase.status == PurchaseStatus.FAILED
    assert not payments.hd_paid()


# --- Disputes -------------------------------------------------------------------------------


def test_it_flags_a_dispute_for_staff_and_keeps_the_hd_result_until_it_is_lost(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))
    dispute = payments.stub.dispute(payments.session_id)

    payments.deliver("charge.dispute.created", dispute)

    purchase = payments.purchase
    assert (purchase.status, purchase.dispute_status, purchase.needs_attention) == (
        PurchaseStatus.DISPUTED,
        "needs_response",
        True,
    )
    assert "Disputed (fraudulent)" in purchase.attention_note
    assert payments.hd_paid()

    payments.deliver("charge.dispute.closed", payments.stub.close_dispute(dispute["id"], status="lost"))

    purchase = payments.purchase
    assert (purchase.status, purchase.dispute_status) == (PurchaseStatus.DISPUTED, "lost")
    assert not payments.hd_paid()


def test_it_pays_again_a_dispute_that_was_won(payments: Payments) -> None:
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))
    dispute = payments.stub.dispute(payments.session_id)
    payments.deliver("charge.dispute.created", dispute)

    payments.deliver("charge.dispute.closed", payments.stub.close_dispute(dispute["id"], status="won"))

    assert (payments.purchase.status, payments.purchase.dispute_status) == (PurchaseStatus.PAID, "won")
    assert payments.hd_paid()


# --- What matches nothing -------------------------------------------------------------------


def test_it_records_and_flags_an_event_for_a_session_it_does_not_know(payments: Payments) -> None:
    stranger = {**payments.stub.pay(payments.session_id), "id": "cs_test_not_ours", "metadata": {}}

    payments.deliver("checkout.session.completed", stranger)

    event = PaymentEvent.objects.get()
    assert (event.outcome, event.needs_attention, event.purchase) == (PaymentEventOutcome.UNMATCHED, True, None)
    assert "cs_test_not_ours" in event.note
    assert payments.purchase.status == PurchaseStatus.PENDING


def test_it_records_a_payment_for_a_deleted_job_and_flags_it_for_a_refund(payments: Payments) -> None:
    session = payments.stub.pay(payments.session_id)
    Job.objects.filter(pk=payments.job.pk).delete()

    payments.deliver("checkout.session.completed", session)

    purchase = payments.purchase
    assert (purchase.job, purchase.animation, purchase.status) == (None, None, PurchaseStatus.PAID)
    assert purchase.needs_attention
    assert "job was deleted: refund it" in purchase.attention_note
    assert PaymentEvent.objects.get().needs_attention
    assert payments.hd_runs_queued() == []


def test_it_records_a_paid_session_whose_checkout_never_got_to_write_its_purchase(payments: Payments) -> None:
    session = payments.stub.pay(payments.session_id)
    Purchase.objects.all().delete()  # as if the process died between Stripe's answer and the insert

    payments.deliver("checkout.session.completed", session)

    purchase = payments.purchase
    assert (purchase.animation_id, purchase.job_id, purchase.status) == (
        payments.animation.pk,
        payments.job.pk,
        PurchaseStatus.PAID,
    )
    assert (purchase.amount, purchase.currency, purchase.email) == (900, "usd", payments.job.email)
    assert payments.hd_paid()


def test_it_flags_a_second_payment_for_an_hd_result_paid_for_already(payments: Payments) -> None:
    # A second session, made (from another tab) before the first was paid, and paid after it.
    other = stripe_api.checkout_session_create(checkout_session_params(payments.job, payments.animation))
    Purchase.objects.create(
        job=payments.job, animation=payments.animation, amount=900, currency="usd", stripe_session_id=other["id"]
    )
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))

    payments.deliver("checkout.session.completed", payments.stub.pay(other["id"]))

    second = Purchase.objects.get(stripe_session_id=other["id"])
    assert second.status == PurchaseStatus.PAID
    assert second.needs_attention
    assert f"Paid twice for one HD video (also #{payments.purchase.pk}): refund one." in second.attention_note
    assert len(payments.hd_runs_queued()) == 1


def test_it_records_events_it_does_not_act_on(payments: Payments) -> None:
    payments.deliver("payment_intent.created", {"id": "pi_test_x", "object": "payment_intent"})

    event = PaymentEvent.objects.get()
    assert (event.outcome, event.needs_attention) == (PaymentEventOutcome.IGNORED, False)


# --- dj-stripe's copy, in the worker -----------------------------------------------------------


def test_it_syncs_dj_stripes_copies_in_the_worker_and_links_them(payments: Payments, stub_broker: Any) -> None:
    from djstripe.models import Charge, Session

    from billing.webhooks import stripe_objects_sync

    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))
    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id, amount=100))
    before = len(payments.stub.requests)

    for message in payments.queued.messages("billing"):
        assert stripe_objects_sync(event_id=message.args[0])

    purchase = payments.purchase
    assert purchase.djstripe_session == Session.objects.get(id=payments.session_id)
    assert purchase.djstripe_charge == Charge.objects.get(id=purchase.stripe_charge_id)
    assert purchase.djstripe_charge is not None
    assert purchase.djstripe_charge.amount_refunded == 100
    fetched = {path.split("/")[2] for _, path in payments.stub.requests[before:]}
    assert fetched >= {"checkout", "payment_intents", "charges"}


def test_it_leaves_the_hd_run_alone_for_a_comp_refunded_elsewhere(payments: Payments) -> None:
    # An animation whose HD result a comp grants keeps it when a Stripe payment of it is refunded.
    payments.deliver("checkout.session.completed", payments.stub.pay(payments.session_id))
    Purchase.objects.create(
        job=payments.job, animation=payments.animation, kind="comp", status=PurchaseStatus.PAID, reason="test"
    )

    payments.deliver("charge.refunded", payments.stub.refund(payments.session_id))

    assert payments.purchase.status == PurchaseStatus.REFUNDED
    assert payments.hd_paid()
