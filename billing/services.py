"""Writes of billing: checkout, what each Stripe fact does to a purchase, refunds, comps, and the webhook endpoint.

**Checkout** (:func:`checkout_for_animation`) makes a Stripe Checkout Session for a
succeeded animation whose HD result is not paid for, or gives back the one still open,
so a second click can never lead to a second charge. The Stripe call is made with no
transaction open, under a lock per animation (``rekindle.cron.advisory_lock``), and the
purchase row is written only once Stripe has answered: Stripe down means a 503 and
nothing written.

**Facts from Stripe** (a Checkout Session completed or expired, a charge refunded, a
dispute opened or closed) come from webhooks (``billing.webhooks``) and from
``reconcile_payments``, through the same functions here. Each locks the purchase, moves
it with one conditional UPDATE from the states it may leave, and then *settles* the
animation in the same transaction: ``AnimationAttempt.hd_paid`` is kept in step with the
purchases (True while one of them grants the HD result: ``billing.models.GRANTS``). A
purchase that starts granting queues the HD run through ``animation.services.
hd_result_generate`` (its message goes out after commit, once); one that stops granting
(a full refund, a lost dispute) takes ``hd_paid`` back, so the HD video's URL is no longer
served, and cancels an HD run still in flight. Money wins over time: a completion that
arrives after the session was marked expired still pays. A charge event that arrives
before its purchase knows the payment (a refund before the completion) is kept and
applied once the completion comes.

Nothing here calls Stripe inside a transaction; the network calls (checkout, the
refund staff ask for, reconciliation's listing, dj-stripe's sync) are made before or
after one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from animation.models import AnimationAttempt, HDAttempt
from animation.services import AnimationNotReady, hd_result_generate
from billing import stripe_api
from billing.models import (
    GRANTS,
    PaymentEvent,
    PaymentEventOutcome,
    Purchase,
    PurchaseKind,
    PurchaseStatus,
    format_amount,
)
from billing.notifications import refund_notice_send
from jobs.attempts import attempt_cancel
from jobs.models import IN_FLIGHT_STATUSES, AttemptStatus, Job
from jobs.notifications import job_link, job_ready_email_queue
from rekindle.cron import advisory_lock
from rekindle.errors import Conflict, NotFound, Unavailable

logger = logging.getLogger(__name__)

# An open session is given again while it has at least this long left to be paid in;
# closer to its end it is expired at Stripe and a new one made.
REUSE_MARGIN = timedelta(minutes=10)
# How long a second click waits for the first one's Checkout Session to be made.
CHECKOUT_LOCK_WAIT_SECONDS = 10.0

# The metadata keys a Checkout Session (and its PaymentIntent) carries back to us.
META_JOB = "rekindle_job_id"
META_ANIMATION = "rekindle_animation_id"


class BillingDisabled(Unavailable):
    code = "billing_disabled"
    message = "Payments are not set up on this server."


class AlreadyPaid(Conflict):
    code = "already_paid"
    message = "The HD result of this animation is paid for already."


class PaymentProcessing(Conflict):
    code = "payment_processing"
    message = "A payment for this HD result is being processed; it will be ready once the payment clears."


class CheckoutInProgress(Conflict):
    code = "checkout_in_progress"
    message = "A checkout for this HD result is being made right now; try again in a moment."


class AnimationNotFound(NotFound):
    message = "No such animation in this job."


def billing_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _from_timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def _id_of(value: Any) -> str:
    """A Stripe reference as its id, whether it came as ``"pi_..."`` or expanded as ``{"id": "pi_..."}``."""
    if isinstance(value, Mapping):
        return str(value.get("id") or "")
    return str(value or "")


# --- Checkout ---------------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    checkout_url: str
    session_id: str
    expires_at: datetime


def _checkout_of(purchase: Purchase) -> Checkout:
    assert purchase.stripe_session_id is not None
    assert purchase.expires_at is not None
    return Checkout(purchase.checkout_url, purchase.stripe_session_id, purchase.expires_at)


@contextmanager
def _checkout_lock(animation_id: uuid.UUID) -> Iterator[None]:
    """One checkout at a time per animation (a lock of the database session, not a transaction)."""
    deadline = time.monotonic() + CHECKOUT_LOCK_WAIT_SECONDS
    while True:
        with advisory_lock(f"billing.checkout:{animation_id}") as acquired:
            if acquired:
                yield
                return
        if time.monotonic() > deadline:
            raise CheckoutInProgress()
        time.sleep(0.05)


def _animation_of_job(job: Job, animation_id: str | uuid.UUID) -> AnimationAttempt:
    try:
        pk = animation_id if isinstance(animation_id, uuid.UUID) else uuid.UUID(str(animation_id))
    except ValueError:
        raise AnimationNotFound() from None
    animation = AnimationAttempt.objects.filter(job=job, pk=pk).first()
    if animation is None:
        raise AnimationNotFound()
    return animation


def _job_page(job: Job, outcome: str) -> str:
    link = job_link(job)
    return f"{link}{'&' if '?' in link else '?'}checkout={outcome}"


def checkout_session_params(job: Job, animation: AnimationAttempt) -> dict[str, Any]:
    """What Stripe is asked for: one HD video at the configured price, for the job's email."""
    if settings.STRIPE_HD_PRICE_ID:
        line_item: dict[str, Any] = {"price": settings.STRIPE_HD_PRICE_ID, "quantity": 1}
    else:
        line_item = {
            "price_data": {
                "currency": settings.STRIPE_HD_CURRENCY,
                "unit_amount": settings.STRIPE_HD_AMOUNT,
                "product_data": {"name": "HD video", "description": "The HD version of your animated photo."},
            },
            "quantity": 1,
        }
    metadata = {META_JOB: str(job.pk), META_ANIMATION: str(animation.pk)}
    expires_at = timezone.now() + timedelta(minutes=settings.STRIPE_CHECKOUT_MINUTES)
    return {
        "mode": "payment",
        "line_items": [line_item],
        "customer_email": job.email,
        "client_reference_id": str(animation.pk),
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        # Stripe fills in {CHECKOUT_SESSION_ID} itself.
        "success_url": _job_page(job, "success") + "&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": _job_page(job, "canceled"),
        "expires_at": int(expires_at.timestamp()),
    }


def checkout_for_animation(*, job: Job, animation_id: str | uuid.UUID) -> Checkout:
    """The Checkout Session to pay for an animation's HD result: the open one, or a new one.

    404 ``not_found`` for an animation that is not this job's; 409 ``animation_not_ready``
    (the preview has not succeeded), ``already_paid``, ``payment_processing`` (a payment by
    a slow method is on its way), ``checkout_in_progress`` (another click is making one);
    503 ``billing_disabled`` without Stripe keys, ``payment_provider_unavailable`` when
    Stripe cannot be reached (nothing is written then).
    """
    if not billing_enabled():
        raise BillingDisabled()
    animation = _animation_of_job(job, animation_id)
    with _checkout_lock(animation.pk):
        for _ in range(3):
            reusable, stale = _checkout_state(animation)
            if reusable is not None:
                return _checkout_of(reusable)
            if stale is None:
                break
            _retire_session(stale)
        else:
            raise CheckoutInProgress()
        session = stripe_api.checkout_session_create(checkout_session_params(job, animation))
        return _checkout_of(_checkout_record(job, animation, session))


def _checkout_state(animation: AnimationAttempt) -> tuple[Purchase | None, Purchase | None]:
    """``(an open purchase to give again, an open one too close to its end)``; raises when no checkout may be made."""
    animation.refresh_from_db(fields=["status", "hd_paid"])
    if animation.status != AttemptStatus.SUCCEEDED:
        raise AnimationNotReady(details={"animation_id": str(animation.pk), "status": animation.status})
    if animation.hd_paid:
        raise AlreadyPaid(details={"animation_id": str(animation.pk)})
    now = timezone.now()
    pending = Purchase.objects.filter(animation=animation, kind=PurchaseKind.STRIPE, status=PurchaseStatus.PENDING)
    for purchase in pending.order_by("-created_at"):
        if purchase.session_complete:
            raise PaymentProcessing(details={"session_id": purchase.stripe_session_id})
        expires_at = purchase.expires_at
        if expires_at is not None and expires_at > now + REUSE_MARGIN and purchase.checkout_url:
            return purchase, None
        if expires_at is not None and expires_at > now:
            return None, purchase
        # Past its end Stripe cannot take a payment on it any more; its expired event may still come.
        _move(purchase, {PurchaseStatus.PENDING}, PurchaseStatus.EXPIRED)
    return None, None


def _retire_session(purchase: Purchase) -> None:
    """Expire an open session near its end at Stripe, or learn that it was paid meanwhile."""
    assert purchase.stripe_session_id is not None
    try:
        stripe_api.checkout_session_expire(purchase.stripe_session_id)
    except stripe_api.StripeRefused:
        # No longer open: completed (paid, or paying by a slow method) or already expired.
        session = stripe_api.checkout_session_retrieve(purchase.stripe_session_id)
        with transaction.atomic():
            session_apply(session)
        return
    with transaction.atomic():
        _move(purchase, {PurchaseStatus.PENDING}, PurchaseStatus.EXPIRED)


def _checkout_record(job: Job, animation: AnimationAttempt, session: Mapping[str, Any]) -> Purchase:
    try:
        with transaction.atomic():
            return Purchase.objects.create(
                job=job,
                animation=animation,
                kind=PurchaseKind.STRIPE,
                status=PurchaseStatus.PENDING,
                amount=int(session.get("amount_total") or 0),
                currency=str(session.get("currency") or ""),
                email=job.email,
                stripe_session_id=session["id"],
                checkout_url=str(session.get("url") or ""),
                expires_at=_from_timestamp(session.get("expires_at")),
                livemode=bool(session.get("livemode")),
            )
    except IntegrityError:
        # Its completion came first and recorded it from the session's metadata.
        return Purchase.objects.get(stripe_session_id=session["id"])


# --- Moving a purchase ---------------------------------------------------------------


@dataclass
class Change:
    """What one fact did: to which purchase, in words for the event record and the reconciliation's output."""

    purchase: Purchase | None
    outcome: str = PaymentEventOutcome.NO_CHANGE
    notes: list[str] = field(default_factory=list)
    # A sentence for staff: the purchase and the event are flagged with it.
    attention: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome == PaymentEventOutcome.APPLIED

    @property
    def note(self) -> str:
        return "; ".join(self.notes)


def _move(purchase: Purchase, from_statuses: Collection[str], to_status: str, **values: Any) -> bool:
    """Move ``purchase`` from one of ``from_statuses`` to ``to_status`` in one conditional UPDATE (False: elsewhere)."""
    moved = Purchase.objects.filter(pk=purchase.pk, status__in=from_statuses).update(status=to_status, **values) == 1
    if moved:
        # What was written, without reading the row again (callers hold its lock, or it has no other writer).
        purchase.status = to_status
        for name, value in values.items():
            setattr(purchase, name, value)
    return moved


def purchase_flag(purchase: Purchase, note: str) -> None:
    """Ask staff to look at a purchase (the admin filters on it), adding ``note`` to what it says already."""
    purchase.refresh_from_db(fields=["attention_note"])
    if note in purchase.attention_note.splitlines():
        return
    text = f"{purchase.attention_note}\n{note}".strip()
    Purchase.objects.filter(pk=purchase.pk).update(needs_attention=True, attention_note=text)
    purchase.needs_attention, purchase.attention_note = True, text


def _locked(purchase_id: int) -> Purchase:
    return Purchase.objects.select_for_update().get(pk=purchase_id)


def _purchase_for_session(session: Mapping[str, Any], *, create: bool) -> Purchase | None:
    """The purchase of a Checkout Session, locked; made from the session's metadata when ours was never recorded.

    That happens when the process died between Stripe's answer and the insert. A session
    without our metadata is not ours: None.
    """
    session_id = str(session.get("id") or "")
    purchase = Purchase.objects.select_for_update().filter(stripe_session_id=session_id).first()
    if purchase is not None or not create:
        return purchase
    metadata = session.get("metadata") or {}
    if not metadata.get(META_ANIMATION):
        return None
    animation = _existing(AnimationAttempt, metadata.get(META_ANIMATION))
    job = animation.job if animation is not None else _existing(Job, metadata.get(META_JOB))
    details = session.get("customer_details") or {}
    email = session.get("customer_email") or details.get("email") or (job.email if job else "")
    try:
        with transaction.atomic():
            purchase = Purchase.objects.create(
                job=job,
                animation=animation,
                kind=PurchaseKind.STRIPE,
                status=PurchaseStatus.PENDING,
                amount=int(session.get("amount_total") or 0),
                currency=str(session.get("currency") or ""),
                email=email,
                stripe_session_id=session_id,
                expires_at=_from_timestamp(session.get("expires_at")),
                livemode=bool(session.get("livemode")),
            )
    except IntegrityError:
        pass
    return Purchase.objects.select_for_update().get(stripe_session_id=session_id)


def _existing(model: Any, pk: Any) -> Any:
    try:
        return model.objects.filter(pk=uuid.UUID(str(pk))).first()
    except ValueError:
        return None


def _record_session_facts(purchase: Purchase, session: Mapping[str, Any]) -> None:
    values: dict[str, Any] = {"livemode": bool(session.get("livemode"))}
    payment_intent = _id_of(session.get("payment_intent"))
    if payment_intent and not purchase.stripe_payment_intent_id:
        values["stripe_payment_intent_id"] = payment_intent
    if session.get("status") == "complete":
        values["session_complete"] = True
    if session.get("amount_total") is not None and purchase.kind == PurchaseKind.STRIPE:
        values["amount"] = int(session["amount_total"])
        values["currency"] = str(session.get("currency") or purchase.currency)
    Purchase.objects.filter(pk=purchase.pk).update(**values)
    for name, value in values.items():
        setattr(purchase, name, value)


PAYABLE_FROM = {PurchaseStatus.PENDING, PurchaseStatus.EXPIRED, PurchaseStatus.FAILED}


def session_apply(session: Mapping[str, Any]) -> Change:
    """A Checkout Session as Stripe says it is now (completed paid or unpaid, expired): what it changes here."""
    status = session.get("status")
    if status == "complete":
        if session.get("payment_status") in ("paid", "no_payment_required"):
            return session_paid(session)
        return session_awaiting_payment(session)
    if status == "expired":
        return session_expired(session)
    purchase = _purchase_for_session(session, create=False)
    return Change(purchase, notes=["session still open"])


def session_paid(session: Mapping[str, Any]) -> Change:
    """``checkout.session.completed`` (paid) or ``..async_payment_succeeded``: the purchase is paid."""
    purchase = _purchase_for_session(session, create=True)
    if purchase is None:
        return _unmatched_session(session)
    _record_session_facts(purchase, session)
    change = Change(purchase)
    before = purchase.status
    if _move(purchase, PAYABLE_FROM, PurchaseStatus.PAID, paid_at=timezone.now()):
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append(f"{before} -> paid ({purchase.amount_text})")
        if before != PurchaseStatus.PENDING:
            change.notes.append(f"paid after it was marked {before}")
    else:
        change.notes.append(f"already {purchase.status}")
    _apply_waiting_events(purchase, change)
    _settle(purchase, change)
    return change


def session_awaiting_payment(session: Mapping[str, Any]) -> Change:
    """``checkout.session.completed`` with the payment still on its way (a slow method): pending, complete."""
    purchase = _purchase_for_session(session, create=True)
    if purchase is None:
        return _unmatched_session(session)
    was_complete = purchase.session_complete
    _record_session_facts(purchase, session)
    change = Change(purchase)
    if _move(purchase, {PurchaseStatus.EXPIRED}, PurchaseStatus.PENDING):
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append("expired -> pending (completed, awaiting the payment)")
    elif purchase.status == PurchaseStatus.PENDING and not was_complete:
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append("completed, awaiting the payment")
    else:
        change.notes.append(f"already {purchase.status}")
    _apply_waiting_events(purchase, change)
    _settle(purchase, change)
    return change


def session_payment_failed(session: Mapping[str, Any]) -> Change:
    """``checkout.session.async_payment_failed``: the slow payment did not go through."""
    purchase = _purchase_for_session(session, create=True)
    if purchase is None:
        return _unmatched_session(session)
    _record_session_facts(purchase, session)
    change = Change(purchase)
    before = purchase.status
    if _move(purchase, {PurchaseStatus.PENDING, PurchaseStatus.EXPIRED}, PurchaseStatus.FAILED):
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append(f"{before} -> failed (the payment did not go through)")
    else:
        change.notes.append(f"already {purchase.status}")
    _settle(purchase, change)
    return change


def session_expired(session: Mapping[str, Any]) -> Change:
    """``checkout.session.expired``: nobody paid in time. A purchase paid meanwhile stays paid."""
    purchase = _purchase_for_session(session, create=False)
    if purchase is None:
        if (session.get("metadata") or {}).get(META_ANIMATION):
            # Ours, but its purchase was never recorded (the checkout died after Stripe answered): nobody paid.
            return Change(None, outcome=PaymentEventOutcome.IGNORED, notes=["never recorded here, nobody paid"])
        return _unmatched_session(session)
    change = Change(purchase)
    if _move(purchase, {PurchaseStatus.PENDING}, PurchaseStatus.EXPIRED):
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append("pending -> expired")
    else:
        change.notes.append(f"already {purchase.status}")
    return change


def _unmatched_session(session: Mapping[str, Any]) -> Change:
    return Change(
        None,
        outcome=PaymentEventOutcome.UNMATCHED,
        notes=[f"no purchase for Checkout Session {session.get('id')}"],
        attention=f"A Checkout Session we have no purchase for: {session.get('id')}. Look it up in Stripe.",
    )


def _purchase_for_payment(payment_intent: str, charge: str = "") -> Purchase | None:
    rows = Purchase.objects.select_for_update()
    if payment_intent:
        purchase = rows.filter(stripe_payment_intent_id=payment_intent).first()
        if purchase is not None:
            return purchase
    if charge:
        return rows.filter(stripe_charge_id=charge).first()
    return None


def _unmatched_payment(what: str, object_id: str, payment_intent: str) -> Change:
    return Change(
        None,
        outcome=PaymentEventOutcome.UNMATCHED,
        notes=[f"no purchase for {what} {object_id} (payment {payment_intent or 'unknown'}); kept for when one comes"],
        attention=f"A {what} for a payment we have no purchase for yet: {object_id}.",
    )


def charge_refunded(charge: Mapping[str, Any]) -> Change:
    """``charge.refunded``: all of it (the HD result is taken back) or part of it (kept, recorded)."""
    payment_intent, charge_id = _id_of(charge.get("payment_intent")), str(charge.get("id") or "")
    purchase = _purchase_for_payment(payment_intent, charge_id)
    if purchase is None:
        return _unmatched_payment("refund", charge_id, payment_intent)
    change = Change(purchase)
    if charge_id and not purchase.stripe_charge_id:
        Purchase.objects.filter(pk=purchase.pk).update(stripe_charge_id=charge_id)
        purchase.stripe_charge_id = charge_id
    refunded = int(charge.get("amount_refunded") or 0)
    charged = int(charge.get("amount") or purchase.amount)
    full = bool(charge.get("refunded")) or refunded >= charged
    target = PurchaseStatus.REFUNDED if full else PurchaseStatus.PARTIALLY_REFUNDED
    moved = (
        Purchase.objects.filter(
            pk=purchase.pk,
            status__in={PurchaseStatus.PAID, PurchaseStatus.PARTIALLY_REFUNDED, PurchaseStatus.DISPUTED},
            amount_refunded__lt=refunded,
        ).update(status=target, amount_refunded=refunded, refunded_at=timezone.now())
        == 1
    )
    if not moved:
        change.notes.append(
            f"already {purchase.status}, {format_amount(purchase.amount_refunded, purchase.currency)} refunded"
        )
        return change
    purchase.refresh_from_db()
    change.outcome = PaymentEventOutcome.APPLIED
    change.notes.append(f"{target}: {format_amount(refunded, purchase.currency)} refunded")
    purchase_id = purchase.pk
    transaction.on_commit(lambda: refund_notice_send(purchase_id=purchase_id))
    _settle(purchase, change)
    return change


def _dispute_purchase(dispute: Mapping[str, Any]) -> tuple[Purchase | None, str, str]:
    payment_intent, charge = _id_of(dispute.get("payment_intent")), _id_of(dispute.get("charge"))
    return _purchase_for_payment(payment_intent, charge), payment_intent, str(dispute.get("id") or "")


def dispute_opened(dispute: Mapping[str, Any]) -> Change:
    """``charge.dispute.created``: the buyer's bank disputes the payment; staff are asked to respond."""
    purchase, payment_intent, dispute_id = _dispute_purchase(dispute)
    if purchase is None:
        return _unmatched_payment("dispute", dispute_id, payment_intent)
    change = Change(
        purchase, attention=f"Disputed ({dispute.get('reason') or 'no reason given'}): answer it in Stripe."
    )
    status = str(dispute.get("status") or "needs_response")
    before = purchase.status
    if _move(
        purchase,
        {PurchaseStatus.PAID, PurchaseStatus.PARTIALLY_REFUNDED},
        PurchaseStatus.DISPUTED,
        dispute_status=status,
    ):
        change.outcome = PaymentEventOutcome.APPLIED
        change.notes.append(f"{before} -> disputed")
    else:
        change.notes.append(f"already {purchase.status}")
    _settle(purchase, change)
    return change


def dispute_closed(dispute: Mapping[str, Any]) -> Change:
    """``charge.dispute.closed``: won, the purchase is paid again; lost, the HD result is taken back."""
    purchase, payment_intent, dispute_id = _dispute_purchase(dispute)
    if purchase is None:
        return _unmatched_payment("dispute", dispute_id, payment_intent)
    status = str(dispute.get("status") or "")
    change = Change(purchase, attention=f"Dispute closed: {status or 'no outcome given'}.")
    if status == "lost":
        moved = (
            Purchase.objects.filter(pk=purchase.pk, status=PurchaseStatus.DISPUTED)
            .exclude(dispute_status="lost")
            .update(dispute_status="lost")
        )
        if moved:
            purchase.refresh_from_db()
            change.outcome = PaymentEventOutcome.APPLIED
            change.notes.append("dispute lost: the HD result is taken back")
    else:
        back = PurchaseStatus.PARTIALLY_REFUNDED if purchase.amount_refunded else PurchaseStatus.PAID
        if _move(purchase, {PurchaseStatus.DISPUTED}, back, dispute_status=status):
            change.outcome = PaymentEventOutcome.APPLIED
            change.notes.append(f"dispute {status}: disputed -> {back}")
    if not change.changed:
        change.notes.append(f"already {purchase.status}")
    _settle(purchase, change)
    return change


# Charge-level facts that may come before the purchase knows its payment, by event type.
_WAITING_APPLIERS: dict[str, Callable[[Mapping[str, Any]], Change]] = {
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_opened,
    "charge.dispute.closed": dispute_closed,
}


def _apply_waiting_events(purchase: Purchase, change: Change) -> None:
    """Apply, in the order Stripe made them, the charge events that came before this purchase knew its payment."""
    if not purchase.stripe_payment_intent_id:
        return
    waiting = PaymentEvent.objects.select_for_update().filter(
        purchase__isnull=True,
        outcome=PaymentEventOutcome.UNMATCHED,
        payment_intent_id=purchase.stripe_payment_intent_id,
        type__in=list(_WAITING_APPLIERS),
    )
    for event in waiting.order_by("created", "pk"):
        late = _WAITING_APPLIERS[event.type](event.data)
        PaymentEvent.objects.filter(pk=event.pk).update(
            purchase=purchase,
            outcome=late.outcome,
            needs_attention=bool(late.attention),
            note=f"{event.note}\napplied when its purchase came: {late.note}",
        )
        change.notes.append(f"then {event.type} {event.stripe_id} that came first: {late.note}")
        if late.attention:
            change.attention = f"{change.attention} {late.attention}".strip()
        purchase.refresh_from_db()


# --- Settling the animation: hd_paid in step with the purchases ---------------------------


def _settle(purchase: Purchase, change: Change) -> None:
    """Make the animation's ``hd_paid`` what its purchases say, queue or stop the HD run, in this transaction."""
    if purchase.animation_id is None:
        if purchase.grants_hd:
            change.attention = f"{change.attention} Paid for an HD video whose job was deleted: refund it.".strip()
        return
    animation = AnimationAttempt.objects.select_for_update().filter(pk=purchase.animation_id).first()
    if animation is None:
        return
    granting = list(Purchase.objects.filter(animation=animation).filter(GRANTS).values_list("pk", flat=True))
    if granting and not animation.hd_paid:
        _grant(animation, purchase, change)
    elif granting and change.changed and purchase.pk in granting and len(granting) > 1:
        others = ", ".join(f"#{pk}" for pk in granting if pk != purchase.pk)
        change.attention = f"{change.attention} Paid twice for one HD video (also {others}): refund one.".strip()
    elif not granting and animation.hd_paid:
        _revoke(animation, change)


def _grant(animation: AnimationAttempt, purchase: Purchase, change: Change) -> None:
    try:
        queued = hd_result_generate(animation=animation)
    except AnimationNotReady:
        change.attention = f"{change.attention} Paid, but the animation preview has not succeeded.".strip()
        return
    hd = HDAttempt.objects.filter(animation=animation).first()
    if hd is not None:
        Purchase.objects.filter(animation=animation, hd__isnull=True).update(hd=hd)
        purchase.hd = hd
    change.notes.append("HD run queued" if queued else "HD result granted")
    if hd is not None and hd.status == AttemptStatus.SUCCEEDED:
        # Made before (bought again after a refund): its ready email goes out again.
        hd_id = hd.pk
        transaction.on_commit(lambda: _hd_ready_again(hd_id))


def _revoke(animation: AnimationAttempt, change: Change) -> None:
    AnimationAttempt.objects.filter(pk=animation.pk).update(hd_paid=False)
    animation.hd_paid = False
    change.notes.append("HD result taken back")
    hd = HDAttempt.objects.filter(animation=animation, status__in=IN_FLIGHT_STATUSES).first()
    if hd is not None and attempt_cancel(hd):
        change.notes.append("HD run canceled")


def _hd_ready_again(hd_id: uuid.UUID) -> None:
    hd = HDAttempt.objects.filter(pk=hd_id).first()
    if hd is not None:
        job_ready_email_queue(attempt=hd, force=True)


# --- Staff: refund, comp ---------------------------------------------------------------


class NotRefundable(Conflict):
    code = "not_refundable"
    message = "Only a paid Stripe purchase can be refunded."


def purchase_refund(*, purchase: Purchase, by: User | None) -> None:
    """Ask Stripe to refund what is left of a payment; the ``charge.refunded`` webhook then moves the purchase.

    409 ``not_refundable`` for a comp, or a purchase that is not paid (or paid in part).
    Stripe unreachable: 503 ``payment_provider_unavailable``; a refusal from Stripe (the
    charge is disputed, say): :class:`billing.stripe_api.StripeRefused`.
    """
    purchase.refresh_from_db()
    refundable = {PurchaseStatus.PAID, PurchaseStatus.PARTIALLY_REFUNDED}
    if (
        purchase.kind != PurchaseKind.STRIPE
        or purchase.status not in refundable
        or not purchase.stripe_payment_intent_id
    ):
        raise NotRefundable(details={"purchase": purchase.pk, "status": purchase.status})
    stripe_api.refund_create(
        payment_intent=purchase.stripe_payment_intent_id,
        # A second click (or a retry) asks for the same refund, not another one.
        idempotency_key=f"rekindle-refund-{purchase.pk}-{purchase.amount_refunded}",
        metadata={"rekindle_purchase_id": str(purchase.pk)},
    )
    Purchase.objects.filter(pk=purchase.pk).update(refund_requested_at=timezone.now(), refund_requested_by=by)


def hd_grant_comp(*, animation: AnimationAttempt, by: User | None, reason: str) -> Purchase:
    """Staff give an animation's HD result at no charge: a ``comp`` purchase saying who and why, and the HD run.

    409 ``animation_not_ready`` when the preview has not succeeded, ``already_paid`` when
    the HD result is granted already (requeue its HD run instead, if it failed).
    """
    with transaction.atomic():
        row = AnimationAttempt.objects.select_for_update().select_related("job").get(pk=animation.pk)
        if row.status != AttemptStatus.SUCCEEDED:
            raise AnimationNotReady(details={"animation_id": str(row.pk), "status": row.status})
        if row.hd_paid:
            raise AlreadyPaid(details={"animation_id": str(row.pk)})
        purchase = Purchase.objects.create(
            job=row.job,
            animation=row,
            kind=PurchaseKind.COMP,
            status=PurchaseStatus.PAID,
            email=row.job.email,
            granted_by=by,
            reason=reason,
            paid_at=timezone.now(),
        )
        change = Change(purchase)
        _settle(purchase, change)
        animation.hd_paid = True
    return purchase


# --- dj-stripe's WebhookEndpoint row from the settings ---------------------------------

# The one endpoint the settings describe; its URL is /stripe/webhook/ (billing.urls).
WEBHOOK_ENDPOINT_UUID = uuid.UUID("8d6f1f2e-4c1b-5b7e-9a57-7265b1d1e4a0")
WEBHOOK_ENDPOINT_ID = "we_rekindle_settings"
WEBHOOK_PATH = "/stripe/webhook/"
# The events to enable on the endpoint in Stripe's dashboard.
WEBHOOK_EVENTS = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
)


def webhook_endpoint_sync() -> Any:
    """Write ``STRIPE_WEBHOOK_SECRET`` into dj-stripe's WebhookEndpoint row (made if missing); None without one.

    ``manage.py migrate`` calls it (``billing.apps``), as does ``sync_stripe_webhook_endpoint``:
    a deployer sets the two variables and nothing in the admin.
    """
    import stripe
    from djstripe.models import WebhookEndpoint

    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return None
    endpoint, _ = WebhookEndpoint.objects.update_or_create(
        djstripe_uuid=WEBHOOK_ENDPOINT_UUID,
        defaults={
            "id": WEBHOOK_ENDPOINT_ID,
            "secret": secret,
            "url": settings.SITE_URL + WEBHOOK_PATH,
            "enabled_events": list(WEBHOOK_EVENTS),
            "status": "enabled",
            "livemode": settings.STRIPE_LIVE_MODE,
            "api_version": stripe.api_version,
            "djstripe_tolerance": settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
            "djstripe_validation_method": "verify_signature",
        },
    )
    return endpoint


def stripe_owner_account_ensure() -> None:
    """Have dj-stripe know the Stripe account of ``STRIPE_SECRET_KEY``, fetching it (outside any transaction) if not.

    dj-stripe needs it to record an event, and would fetch it inside the webhook's
    transaction. When Stripe cannot be reached it is left to dj-stripe (logged).
    """
    from djstripe.models import Account, APIKey

    key = settings.STRIPE_SECRET_KEY
    if not key or APIKey.objects.filter(secret=key, djstripe_owner_account__isnull=False).exists():
        return
    try:
        data = stripe_api.account_retrieve()
    except (Unavailable, stripe_api.StripeRefused) as exc:
        logger.warning("billing.account_unknown error=%s", exc)
        return
    with transaction.atomic():
        account, _ = Account.objects.get_or_create(
            id=data["id"], defaults={"stripe_data": data, "livemode": settings.STRIPE_LIVE_MODE}
        )
        api_key, _ = APIKey.objects.get_or_create_by_api_key(key)
        APIKey.objects.filter(pk=api_key.pk).update(djstripe_owner_account=account)


# --- Reconciliation: what missed webhooks left behind ------------------------------------

# What reconcile_payments asks Stripe to include with each listed session: the payment and its charge.
RECONCILE_EXPAND = ["data.payment_intent.latest_charge"]


def payment_reconcile_session(session: Mapping[str, Any]) -> list[str]:
    """Bring our purchase in line with a Checkout Session as Stripe lists it; what it fixed, one line each.

    Paid in Stripe but not here: paid now (the HD run queued, a purchase recorded from the
    session's metadata if there was none); refunded in Stripe but not here: refunded now;
    expired or failed likewise. Through the same services as the webhooks, so a webhook
    that arrives later changes nothing more. Sessions that are not ours are left alone.
    """
    session_id = str(session.get("id") or "")
    ours = bool((session.get("metadata") or {}).get(META_ANIMATION))
    if not ours and not Purchase.objects.filter(stripe_session_id=session_id).exists():
        return []
    fixes: list[str] = []
    with transaction.atomic():
        changes = [session_apply(session)]
        intent = session.get("payment_intent")
        if isinstance(intent, Mapping):
            if session.get("status") == "complete" and intent.get("status") in ("requires_payment_method", "canceled"):
                changes.append(session_payment_failed(session))
            charge = intent.get("latest_charge")
            if isinstance(charge, Mapping) and int(charge.get("amount_refunded") or 0) > 0:
                changes.append(charge_refunded(charge))
        for change in changes:
            if change.attention and change.purchase is not None:
                purchase_flag(change.purchase, change.attention)
            if change.changed and change.purchase is not None:
                fixes.append(f"purchase #{change.purchase.pk} (session {session_id}): {change.note}")
    return fixes
