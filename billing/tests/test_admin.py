"""Billing in the admin: the purchase list, refunds through Stripe's Refund API, comps, a job's purchases."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from animation.models import AnimationAttempt, HDAttempt
from animation.tasks import generate_hd_result
from billing.models import PaymentEvent, Purchase, PurchaseKind, PurchaseStatus
from billing.services import checkout_for_animation
from rekindle.testing.factories import AnimationAttemptFactory, PurchaseFactory, UserFactory
from rekindle.testing.stripe_stub import StripeStub, WebhookSender

pytestmark = pytest.mark.django_db

PURCHASES = reverse("admin:billing_purchase_changelist")
ANIMATIONS = reverse("admin:animation_animationattempt_changelist")
XSS = "<svg onload=alert(1)>"


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _paid_through_stripe(stub: StripeStub, webhooks: WebhookSender, on_commit: Any, *, email: str = "") -> Purchase:
    animation = AnimationAttemptFactory.create(succeeded=True, **({"job__email": email} if email else {}))
    session_id = checkout_for_animation(job=animation.job, animation_id=animation.pk).session_id
    with on_commit(execute=True):
        webhooks.deliver("checkout.session.completed", stub.pay(session_id))
    return Purchase.objects.get(stripe_session_id=session_id)


def test_it_lists_purchases_with_amount_job_email_and_a_stripe_link(admin_client: Client) -> None:
    paid = PurchaseFactory.create(paid=True, email="ada@example.com")
    pending = PurchaseFactory.create(attention_note=XSS, needs_attention=True)

    response = admin_client.get(PURCHASES)

    assert response.status_code == 200
    body = response.content.decode()
    assert "9.00 USD" in body
    assert "ada@example.com" in body
    assert f"https://dashboard.stripe.com/test/payments/{paid.stripe_payment_intent_id}" in body
    assert f"https://dashboard.stripe.com/test/checkout/sessions/{pending.stripe_session_id}" in body
    assert reverse("admin:jobs_job_change", args=[paid.job_id]) in body
    detail = admin_client.get(reverse("admin:billing_purchase_change", args=[pending.pk])).content.decode()
    assert XSS not in detail
    assert "&lt;svg onload=alert(1)&gt;" in detail
    assert 'name="_save"' not in detail


def test_it_finds_purchases_by_email_session_or_payment_and_filters_them(admin_client: Client) -> None:
    ada = PurchaseFactory.create(paid=True, email="ada@example.com")
    bob = PurchaseFactory.create(email="bob@example.com", needs_attention=True)

    def found(**query: str) -> set[int]:
        return {p.pk for p in admin_client.get(PURCHASES, query).context["cl"].result_list}

    assert found(q="ada@") == {ada.pk}
    assert found(q=str(bob.stripe_session_id)) == {bob.pk}
    assert found(q=ada.stripe_payment_intent_id) == {ada.pk}
    assert found(status__exact="paid") == {ada.pk}
    assert found(needs_attention__exact="1") == {bob.pk}
    assert found(kind__exact="comp") == set()


def test_it_refunds_through_stripe_and_the_webhook_confirms_it(
    admin_client: Client,
    admin_user: Any,
    stripe_stub: StripeStub,
    stripe_webhooks: WebhookSender,
    django_capture_on_commit_callbacks: Any,
) -> None:
    purchase = _paid_through_stripe(stripe_stub, stripe_webhooks, django_capture_on_commit_callbacks)
    comp = PurchaseFactory.create(kind=PurchaseKind.COMP, status=PurchaseStatus.PAID, stripe_session_id=None)

    response = admin_client.post(
        PURCHASES, {"action": "refund_purchases", "_selected_action": [purchase.pk, comp.pk]}, follow=True
    )

    assert _messages(response) == ["Asked Stripe to refund 1 purchase, skipped 1 comp"]
    [sent] = stripe_stub.params_of("POST", "/v1/refunds")
    assert sent["payment_intent"] == purchase.stripe_payment_intent_id
    purchase.refresh_from_db()
    assert purchase.refund_requested_by == admin_user
    assert purchase.status == PurchaseStatus.PAID  # until Stripe says so
    assert purchase.animation is not None
    assert purchase.animation.hd_paid

    with django_capture_on_commit_callbacks(execute=True):
        stripe_webhooks.deliver("charge.refunded", stripe_stub.charge_of(str(purchase.stripe_session_id)))

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.REFUNDED
    assert purchase.animation_id is not None
    assert not AnimationAttempt.objects.get(pk=purchase.animation_id).hd_paid


def test_it_says_what_stripe_refused(
    admin_client: Client,
    stripe_stub: StripeStub,
    stripe_webhooks: WebhookSender,
    django_capture_on_commit_callbacks: Any,
) -> None:
    purchase = _paid_through_stripe(stripe_stub, stripe_webhooks, django_capture_on_commit_callbacks)
    stripe_stub.dispute(str(purchase.stripe_session_id))

    response = admin_client.post(
        PURCHASES, {"action": "refund_purchases", "_selected_action": [purchase.pk]}, follow=True
    )

    messages = _messages(response)
    assert messages[0] == "Asked Stripe to refund 0 purchases"
    assert messages[1].startswith(f"Stripe refused #{purchase.pk}: ")
    assert "disputed" in messages[1]


def test_it_grants_the_hd_result_as_a_comp_saying_who_and_why(
    admin_client: Client, admin_user: Any, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ready = AnimationAttemptFactory.create(succeeded=True)
    paid = PurchaseFactory.create(paid=True).animation
    not_ready = AnimationAttemptFactory.create()
    assert paid is not None
    selected = {"action": "grant_hd_comp", "_selected_action": [str(a.pk) for a in (ready, paid, not_ready)]}

    asking = admin_client.post(ANIMATIONS, selected)
    assert asking.status_code == 200
    assert b'name="reason"' in asking.content
    assert not Purchase.objects.filter(kind=PurchaseKind.COMP).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            ANIMATIONS, {**selected, "apply": "1", "reason": "Printer ate the first one"}, follow=True
        )

    assert _messages(response) == [
        "Granted the HD result of 1 animation, skipped 1 whose preview had not succeeded"
        " and 1 with the HD result granted already"
    ]
    comp = Purchase.objects.get(kind=PurchaseKind.COMP)
    assert (comp.animation, comp.granted_by, comp.reason, comp.status) == (
        ready,
        admin_user,
        "Printer ate the first one",
        PurchaseStatus.PAID,
    )
    ready.refresh_from_db()
    assert ready.hd_paid
    hd = HDAttempt.objects.get(animation=ready)
    assert comp.hd == hd
    assert queued.calls(generate_hd_result.queue_name) == [("generate_hd_result", str(hd.pk))]
    not_ready.refresh_from_db()
    assert not not_ready.hd_paid


def test_it_asks_for_a_reason_before_a_comp(admin_client: Client) -> None:
    animation = AnimationAttemptFactory.create(succeeded=True)

    response = admin_client.post(
        ANIMATIONS, {"action": "grant_hd_comp", "apply": "1", "reason": "", "_selected_action": [str(animation.pk)]}
    )

    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert not Purchase.objects.exists()


def test_it_no_longer_offers_to_generate_an_hd_result_without_a_purchase(admin_client: Client) -> None:
    AnimationAttemptFactory.create(succeeded=True)

    actions = [name for name, _ in admin_client.get(ANIMATIONS).context["action_form"].fields["action"].choices]

    assert "grant_hd_comp" in actions
    assert "generate_hd_result" not in actions


def test_it_shows_a_jobs_purchases_on_its_page(admin_client: Client) -> None:
    purchase = PurchaseFactory.create(paid=True)

    body = admin_client.get(reverse("admin:jobs_job_change", args=[purchase.job_id])).content.decode()

    assert "Purchases" in body
    assert "9.00 USD" in body
    assert reverse("admin:billing_purchase_change", args=[purchase.pk]) in body


def test_it_lists_the_payment_events_flagged_for_staff(admin_client: Client) -> None:
    purchase = PurchaseFactory.create()
    PaymentEvent.objects.create(
        stripe_id="evt_test_flagged",
        type="charge.refunded",
        created="2026-01-01T00:00:00Z",
        outcome="unmatched",
        needs_attention=True,
        note=XSS,
        purchase=purchase,
    )

    response = admin_client.get(reverse("admin:billing_paymentevent_changelist"), {"needs_attention__exact": "1"})

    body = response.content.decode()
    assert "evt_test_flagged" in body
    assert XSS not in body


def test_it_keeps_people_without_the_permission_out(client: Client) -> None:
    purchase = PurchaseFactory.create(paid=True)
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_purchase"))
    client.force_login(viewer)

    assert client.get(PURCHASES).status_code == 200
    response = client.post(PURCHASES, {"action": "refund_purchases", "_selected_action": [purchase.pk]})
    assert response.status_code == 200  # the action is not offered: nothing happens
    purchase.refresh_from_db()
    assert purchase.refund_requested_at is None
