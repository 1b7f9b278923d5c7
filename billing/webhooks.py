"""Stripe's events, as dj-stripe hands them over: applied once, by a small handler per type, with no network call.

The path of one webhook: ``billing.views.StripeWebhookView`` (dj-stripe's own view, with the
signature checked first so a forged or stale request stores nothing) -> dj-stripe records
the request (``WebhookEventTrigger``), verifies the signature against the secret of its
``WebhookEndpoint`` row and records the ``Event`` by its Stripe id, then sends its signal
for the event's type -> :func:`on_stripe_event` -> :func:`payment_event_apply`, all in
dj-stripe's transaction.

dj-stripe sends the signal only when it has just inserted the Event: a second delivery of
the same event (two at once: the unique index makes one wait) finds it and does nothing.
:func:`payment_event_apply` records our :class:`~billing.models.PaymentEvent` (unique
too) and calls the handler registered for the type, which calls one service of
``billing.services``, the same the reconciliation uses. All of it is database work.

dj-stripe's own receivers for these signals sync the objects from Stripe's API (a network
call per object) inside that transaction; :func:`connect` takes them off the signals and
the ``sync_stripe_objects`` actor runs them after commit, in a worker, for the Event
(:func:`djstripe_sync_event`). What the services queue (the HD run) also goes out after
commit.

An event that matches nothing (a session we do not know, a refund of a payment we have no
purchase for yet, a payment for a deleted job) is recorded, answered 200 and flagged for
staff; it never becomes a 500, which would only make Stripe send it again. dj-stripe 2.11
has no ``djstripe.webhooks.handler`` registry (its handlers are signal receivers), hence
this module's :func:`handles`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from djstripe import event_handlers as djstripe_handlers
from djstripe.models import Event
from djstripe.signals import WEBHOOK_SIGNALS

from billing import services
from billing.models import PaymentEvent, PaymentEventOutcome, Purchase
from billing.services import Change
from rekindle import metrics

logger = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], Change]
_handlers: dict[str, Handler] = {}


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    """Register the decorated function for these event types; it gets the event's ``data.object``."""

    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            _handlers[event_type] = handler
        return handler

    return register


def handled_types() -> tuple[str, ...]:
    return tuple(_handlers)


@handles("checkout.session.completed")
def on_session_completed(session: Mapping[str, Any]) -> Change:
    # Paid now (a card), or pending until an async_payment_* event (a bank debit, a voucher).
    return services.session_apply(session)


@handles("checkout.session.async_payment_succeeded")
def on_async_payment_succeeded(session: Mapping[str, Any]) -> Change:
    return services.session_paid(session)


@handles("checkout.session.async_payment_failed")
def on_async_payment_failed(session: Mapping[str, Any]) -> Change:
    return services.session_payment_failed(session)


@handles("checkout.session.expired")
def on_session_expired(session: Mapping[str, Any]) -> Change:
    return services.session_expired(session)


@handles("charge.refunded")
def on_charge_refunded(charge: Mapping[str, Any]) -> Change:
    return services.charge_refunded(charge)


@handles("charge.dispute.created")
def on_dispute_created(dispute: Mapping[str, Any]) -> Change:
    return services.dispute_opened(dispute)


@handles("charge.dispute.closed")
def on_dispute_closed(dispute: Mapping[str, Any]) -> Change:
    return services.dispute_closed(dispute)


def _payment_intent_of(data: Mapping[str, Any]) -> str:
    value = data.get("payment_intent")
    if isinstance(value, Mapping):
        return str(value.get("id") or "")
    return str(value or "")


def payment_event_apply(event: Mapping[str, Any], *, djstripe_event: Event | None = None) -> PaymentEvent | None:
    """Record a Stripe event by its id and apply it; None when it was recorded before (a replay: nothing done).

    ``event`` is the event as Stripe sends it (``id``, ``type``, ``created``, ``data.object``).
    Call it inside a transaction (dj-stripe's, for a webhook): the record and what the
    handler does commit together, or not at all.
    """
    data: Mapping[str, Any] = (event.get("data") or {}).get("object") or {}
    event_type = str(event.get("type") or "")
    created = event.get("created")
    record = PaymentEvent(
        stripe_id=str(event["id"]),
        type=event_type,
        created=created if isinstance(created, datetime) else datetime.fromtimestamp(int(created or 0), tz=UTC),
        livemode=bool(event.get("livemode")),
        object_id=str(data.get("id") or ""),
        payment_intent_id=_payment_intent_of(data),
        data=dict(data),
        outcome=PaymentEventOutcome.IGNORED,
        djstripe_event=djstripe_event,
    )
    try:
        with transaction.atomic():
            record.save(force_insert=True)
    except IntegrityError:
        logger.info("billing.event_replayed event=%s type=%s", record.stripe_id, event_type)
        _count_on_commit(event_type, "replayed")
        return None

    handler = _handlers.get(event_type)
    if handler is None:
        record.note = "not an event billing acts on"
        record.save(update_fields=["note"])
        _count_on_commit(event_type, "not_handled")
        return record
    change = handler(data)
    if change.attention and change.purchase is not None:
        services.purchase_flag(change.purchase, change.attention)
    record.purchase = change.purchase
    record.outcome = change.outcome
    record.note = change.note
    record.needs_attention = bool(change.attention)
    record.save(update_fields=["purchase", "outcome", "note", "needs_attention"])
    _count_on_commit(event_type, str(record.outcome))
    logger.info(
        "billing.event_applied event=%s type=%s outcome=%s purchase=%s",
        record.stripe_id,
        event_type,
        record.outcome,
        change.purchase.pk if change.purchase is not None else None,
    )
    return record


def _count_on_commit(event_type: str, outcome: str) -> None:
    """``rekindle_webhook_events_total``, once what the event did commits (a rolled-back one did nothing)."""
    transaction.on_commit(lambda: metrics.WEBHOOK_EVENTS.labels(event_type=event_type, outcome=outcome).inc())


def on_stripe_event(sender: Any, event: Event, **kwargs: Any) -> None:
    """The receiver of every dj-stripe event signal: apply it now, sync dj-stripe's copies later."""
    from billing.tasks import sync_stripe_objects

    payload = {
        "id": event.id,
        "type": event.type,
        "created": event.created,
        "livemode": event.livemode,
        "data": event.data,
    }
    payment_event_apply(payload, djstripe_event=event)
    event_id = event.id
    transaction.on_commit(lambda: _send_sync(sync_stripe_objects, event_id))


def _send_sync(actor: Any, event_id: str) -> None:
    try:
        actor.send(event_id)
    except Exception:
        # Only dj-stripe's copy of the objects waits on it; our state is recorded already.
        logger.warning("billing.sync_not_queued event=%s", event_id, exc_info=True)


# dj-stripe's receivers taken off each event type's signal, to run in the worker instead.
_deferred: dict[str, list[Callable[..., Any]]] = {}


def connect() -> None:
    """Put :func:`on_stripe_event` on every event signal and move dj-stripe's own receivers to the worker."""
    receivers = [
        value for name, value in vars(djstripe_handlers).items() if name.startswith("handle_") and callable(value)
    ]
    for event_type, signal in WEBHOOK_SIGNALS.items():
        for receiver in receivers:
            if signal.disconnect(receiver, sender=Event):
                _deferred.setdefault(event_type, []).append(receiver)
        signal.connect(on_stripe_event, sender=Event, dispatch_uid="billing.on_stripe_event")


def djstripe_sync_event(event: Event) -> None:
    """Run dj-stripe's own receivers for ``event`` (they fetch and store its objects from Stripe's API)."""
    for receiver in _deferred.get(event.type, []):
        receiver(sender=Event, event=event)


def stripe_objects_sync(*, event_id: str) -> bool:
    """The ``sync_stripe_objects`` actor's work: dj-stripe's copies of an event's objects, and the purchase's links.

    Network calls to Stripe's API, made by dj-stripe, after the webhook answered. False when
    dj-stripe has no such event (a sync queued before a rollback).
    """
    from djstripe.models import Charge, Session

    event = Event.objects.filter(id=event_id).first()
    if event is None:
        return False
    djstripe_sync_event(event)
    data = (event.data or {}).get("object") or {}
    object_id = str(data.get("id") or "")
    if data.get("object") == "checkout.session":
        session = Session.objects.filter(id=object_id).first()
        if session is not None:
            Purchase.objects.filter(stripe_session_id=object_id, djstripe_session=None).update(djstripe_session=session)
    elif data.get("object") == "charge":
        charge = Charge.objects.filter(id=object_id).first()
        if charge is not None:
            Purchase.objects.filter(stripe_payment_intent_id=_payment_intent_of(data), djstripe_charge=None).update(
                djstripe_charge=charge
            )
    return True
