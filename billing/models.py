"""Billing records: a purchase of an animation's HD result, and every Stripe event as it was received.

A :class:`Purchase` is the money side of an HD result: paid through Stripe Checkout, or
granted by staff as a comp. ``AnimationAttempt.hd_paid`` is *kept in step* with the
purchases, not derived from them on every read: each service in ``billing.services`` that
moves a purchase recomputes the animation's ``hd_paid`` in the same transaction (``True``
while any of its purchases grants the HD result, see :data:`GRANTING_STATUSES`), so the
API, retention and the admin keep reading one boolean.

A :class:`PaymentEvent` is one Stripe event, recorded by its id (unique) before anything
is done with it, so a delivery of the same event again changes nothing. It keeps what it
did to which purchase, and is flagged for staff when it could not be matched or asks a
person to look (a dispute, a payment for a deleted job).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from animation.models import AnimationAttempt, HDAttempt
from jobs.models import Job

# Currencies Stripe counts in whole units (no cents): their amounts are written without decimals.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)


def format_amount(amount: int, currency: str) -> str:
    """An amount in the currency's smallest unit as people read it: ``900, "usd"`` -> ``"9.00 USD"``."""
    code = currency.upper()
    if currency.lower() in ZERO_DECIMAL_CURRENCIES:
        return f"{amount} {code}"
    return f"{amount / 100:.2f} {code}"


class PurchaseKind(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    COMP = "comp", "Comp (granted by staff)"


class PurchaseStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    REFUNDED = "refunded", "Refunded"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    DISPUTED = "disputed", "Disputed"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


# A purchase in one of these states gives its animation the HD result. A dispute keeps it
# while it is open or won; a lost one (``dispute_status="lost"``) takes it back.
GRANTING_STATUSES = (PurchaseStatus.PAID, PurchaseStatus.PARTIALLY_REFUNDED, PurchaseStatus.DISPUTED)
GRANTS = Q(status__in=GRANTING_STATUSES) & ~Q(status=PurchaseStatus.DISPUTED, dispute_status="lost")


class Purchase(models.Model):
    """One purchase (or comp) of an animation's HD result; see the module docstring for ``hd_paid``.

    Job and animation are kept as ``SET_NULL``: the record of money taken outlives a job
    its owner deleted. The ``djstripe_*`` links point at dj-stripe's copies of the Stripe
    objects once its sync (in a worker) has made them; the ``stripe_*`` ids are set at once.
    """

    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="purchases")
    animation = models.ForeignKey(
        AnimationAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="purchases"
    )
    hd = models.ForeignKey(HDAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="purchases")
    kind = models.CharField(max_length=8, choices=PurchaseKind.choices, default=PurchaseKind.STRIPE)
    status = models.CharField(max_length=20, choices=PurchaseStatus.choices, default=PurchaseStatus.PENDING)
    # In the currency's smallest unit (cents); what the Checkout Session charges. Zero for a comp.
    amount = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    amount_refunded = models.PositiveIntegerField(default=0)
    # The job's email at checkout (kept when the job is deleted).
    email = models.EmailField(blank=True)

    stripe_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=2048, blank=True)
    # When the Checkout Session stops being payable, and whether Stripe says it is complete.
    expires_at = models.DateTimeField(null=True, blank=True)
    session_complete = models.BooleanField(default=False)
    livemode = models.BooleanField(default=False)
    # The dispute's status as Stripe last gave it (needs_response, under_review, won, lost...).
    dispute_status = models.CharField(max_length=32, blank=True)

    # A comp: who granted it, and why. A refund asked for by staff: who, when.
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(blank=True)
    refund_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    refund_requested_at = models.DateTimeField(null=True, blank=True)

    # Something a person should look at (a dispute, a payment for a deleted job, two payments).
    needs_attention = models.BooleanField(default=False)
    attention_note = models.TextField(blank=True)

    djstripe_session = models.ForeignKey(
        "djstripe.Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    djstripe_charge = models.ForeignKey(
        "djstripe.Charge", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True, db_index=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["animation", "status"]),
            models.Index(fields=["email"]),
            models.Index(fields=["needs_attention", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"Purchase {self.pk} ({self.get_kind_display()}, {self.status})"

    @property
    def grants_hd(self) -> bool:
        if self.status == PurchaseStatus.DISPUTED and self.dispute_status == "lost":
            return False
        return self.status in GRANTING_STATUSES

    @property
    def amount_text(self) -> str:
        return format_amount(self.amount, self.currency) if self.currency else "-"

    @property
    def stripe_dashboard_url(self) -> str:
        """The payment (or, before there is one, the Checkout Session) on Stripe's dashboard."""
        base = "https://dashboard.stripe.com/" + ("" if self.livemode else "test/")
        if self.stripe_payment_intent_id:
            return f"{base}payments/{self.stripe_payment_intent_id}"
        if self.stripe_session_id:
            return f"{base}checkout/sessions/{self.stripe_session_id}"
        return ""


class PaymentEventOutcome(models.TextChoices):
    APPLIED = "applied", "Applied"
    NO_CHANGE = "no_change", "No change"
    UNMATCHED = "unmatched", "Unmatched"
    IGNORED = "ignored", "Ignored"


class PaymentEvent(models.Model):
    """One Stripe event, recorded once by its id; what it did, and whether staff should look at it."""

    stripe_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    # When Stripe made it (events can arrive out of order: this orders them).
    created = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    livemode = models.BooleanField(default=False)
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    # The event's object (a Checkout Session, a charge, a dispute) and the payment it belongs to,
    # so an event that came before its purchase knew the payment can be applied once it does.
    object_id = models.CharField(max_length=255, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=PaymentEventOutcome.choices)
    note = models.TextField(blank=True)
    needs_attention = models.BooleanField(default=False)
    # dj-stripe's record of the event (and through it, the webhook requests that brought it).
    djstripe_event = models.ForeignKey(
        "djstripe.Event", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["outcome", "payment_intent_id"])]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id} ({self.outcome})"
