"""Billing in the staff console: purchases and Stripe events, a job's purchases, refunds, comps.

**Purchases**: status, kind, amount, job, email and a link to the payment on Stripe's
dashboard; filters (status, kind, needs attention, currency, date); search by email,
Checkout Session, PaymentIntent or charge id. The action "Refund" asks Stripe's Refund API
for a full refund of each (``purchase_refund``); the ``charge.refunded`` webhook then moves
the purchase and takes the HD result back. **Payment events**: every Stripe event as it
was recorded, what it did, and the ones flagged for staff. Both are audit records:
read-only.

A job's admin page lists its purchases (``jobs.admin.register_job_admin_part``), and the
animation list gets "Grant the HD result as a comp" (``animation.admin.
register_animation_action``): it asks why, then records a ``comp`` purchase with who and
why and queues the HD run (``hd_grant_comp``).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from animation.admin import register_animation_action
from animation.models import AnimationAttempt
from animation.services import AnimationNotReady
from billing import stripe_api
from billing.models import PaymentEvent, Purchase, PurchaseKind, format_amount
from billing.services import AlreadyPaid, NotRefundable, hd_grant_comp, purchase_refund
from jobs.admin import JobAdminPart, register_job_admin_part
from jobs.admin_display import EMPTY, outcome_report, short_id
from rekindle.errors import Unavailable

ADMIN_CSS = {"all": ["rekindle/admin.css"]}


def _job_link(purchase: Purchase) -> SafeString | str:
    if purchase.job_id is None:
        return "(deleted)"
    url = reverse("admin:jobs_job_change", args=[purchase.job_id])
    return format_html('<a href="{}">{}</a>', url, short_id(purchase.job_id))


def _stripe_link(purchase: Purchase) -> SafeString | str:
    url = purchase.stripe_dashboard_url
    if not url:
        return EMPTY
    return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">Stripe</a>', url)


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PaymentEventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = PaymentEvent
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("type", "stripe_id", "outcome", "needs_attention", "note", "created", "received_at")
    readonly_fields = fields
    ordering = ("created", "pk")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdmin):
    list_display = [
        "short",
        "status",
        "kind",
        "amount_column",
        "job_column",
        "email",
        "created_at",
        "paid_at",
        "needs_attention",
        "stripe_column",
    ]
    list_filter = ["status", "kind", "needs_attention", "currency", "created_at"]
    search_fields = ["email", "stripe_session_id", "stripe_payment_intent_id", "stripe_charge_id"]
    search_help_text = "Email (or part of it), a Checkout Session, PaymentIntent or charge id."
    list_select_related = ["job"]
    date_hierarchy = "created_at"
    list_per_page = 50
    show_full_result_count = False
    actions = ["refund_purchases"]
    inlines = [PaymentEventInline]
    fieldsets = [
        (None, {"fields": ["id", "status", "kind", "amount_column", "refunded_column", "email", "job_column"]}),
        ("For staff", {"fields": ["needs_attention", "attention_note"]}),
        ("HD result", {"fields": ["animation_column", "hd_column"]}),
        (
            "Stripe",
            {
                "fields": [
                    "stripe_column",
                    "stripe_session_id",
                    "stripe_payment_intent_id",
                    "stripe_charge_id",
                    "session_complete",
                    "expires_at",
                    "dispute_status",
                    "livemode",
                    "djstripe_session",
                    "djstripe_charge",
                ]
            },
        ),
        ("Comp and refund", {"fields": ["granted_by", "reason", "refund_requested_by", "refund_requested_at"]}),
        ("When", {"fields": ["created_at", "paid_at", "refunded_at", "updated_at"]}),
    ]

    class Media:
        css = ADMIN_CSS

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for _, options in self.fieldsets for name in options["fields"]]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page can be opened (and the refund action run); every field is read-only.
        return bool(request.user.has_perm("billing.change_purchase"))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="purchase", ordering="pk")
    def short(self, obj: Purchase) -> str:
        return f"#{obj.pk}"

    @admin.display(description="amount", ordering="amount")
    def amount_column(self, obj: Purchase) -> str:
        return obj.amount_text if obj.kind == PurchaseKind.STRIPE else "comp"

    @admin.display(description="refunded")
    def refunded_column(self, obj: Purchase) -> str:
        return format_amount(obj.amount_refunded, obj.currency) if obj.amount_refunded else EMPTY

    @admin.display(description="job")
    def job_column(self, obj: Purchase) -> SafeString | str:
        return _job_link(obj)

    @admin.display(description="Stripe")
    def stripe_column(self, obj: Purchase) -> SafeString | str:
        return _stripe_link(obj)

    @admin.display(description="animation")
    def animation_column(self, obj: Purchase) -> SafeString | str:
        if obj.animation_id is None:
            return EMPTY
        url = reverse("admin:animation_animationattempt_change", args=[obj.animation_id])
        return format_html('<a href="{}">Animation attempt {}</a>', url, obj.animation_id)

    @admin.display(description="HD run")
    def hd_column(self, obj: Purchase) -> SafeString | str:
        if obj.hd_id is None:
            return EMPTY
        url = reverse("admin:animation_hdattempt_change", args=[obj.hd_id])
        return format_html('<a href="{}">HD result {}</a>', url, obj.hd_id)

    @admin.action(description="Refund in full (through Stripe; the webhook confirms it)", permissions=["change"])
    def refund_purchases(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        done, skipped, refused = 0, [], []
        for purchase in queryset.order_by("pk"):
            try:
                purchase_refund(purchase=purchase, by=request.user if isinstance(request.user, User) else None)
            except NotRefundable:
                skipped.append("comp" if purchase.kind == PurchaseKind.COMP else purchase.status)
            except stripe_api.StripeRefused as exc:
                refused.append(f"#{purchase.pk}: {exc}")
            except Unavailable:
                refused.append(f"#{purchase.pk}: Stripe cannot be reached, try again")
            else:
                done += 1
        text = outcome_report("Asked Stripe to refund", done, skipped, noun="purchase")
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)
        for line in refused:
            self.message_user(request, f"Stripe refused {line}", messages.ERROR)


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyAdmin):
    list_display = ["stripe_id", "type", "outcome", "needs_attention", "purchase_column", "note", "received_at"]
    list_filter = ["needs_attention", "outcome", "type", "received_at"]
    search_fields = ["=stripe_id", "object_id", "payment_intent_id"]
    search_help_text = "An event id (exact), or a session, charge, dispute or PaymentIntent id."
    list_select_related = ["purchase"]
    list_per_page = 100
    show_full_result_count = False
    fields = readonly_fields = (
        "stripe_id",
        "type",
        "created",
        "received_at",
        "outcome",
        "needs_attention",
        "note",
        "purchase",
        "object_id",
        "payment_intent_id",
        "livemode",
        "djstripe_event",
        "data",
    )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("billing.view_paymentevent"))

    @admin.display(description="purchase")
    def purchase_column(self, obj: PaymentEvent) -> SafeString | str:
        if obj.purchase_id is None:
            return EMPTY
        url = reverse("admin:billing_purchase_change", args=[obj.purchase_id])
        return format_html('<a href="{}">#{}</a>', url, obj.purchase_id)


# --- On the job's page -----------------------------------------------------------------


class PurchaseInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Purchase
    verbose_name_plural = "purchases"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("status", "kind", "amount_text", "amount_refunded", "email", "paid_at", "needs_attention", "stripe")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_text(self, obj: Purchase) -> str:
        return obj.amount_text if obj.kind == PurchaseKind.STRIPE else "comp"

    @admin.display(description="Stripe")
    def stripe(self, obj: Purchase) -> SafeString | str:
        return _stripe_link(obj)


register_job_admin_part(JobAdminPart(inline=PurchaseInline))


# --- On the animation list: a comp --------------------------------------------------------


class CompForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Why the HD result is given at no charge (kept on the purchase).",
    )


@admin.action(description="Grant the HD result as a comp (asks why)", permissions=["change"])
def grant_hd_comp(
    modeladmin: admin.ModelAdmin[AnimationAttempt], request: HttpRequest, queryset: QuerySet[AnimationAttempt]
) -> HttpResponse | None:
    form = CompForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        done, skipped = 0, []
        for animation in queryset.order_by("queued_at"):
            try:
                user = request.user if isinstance(request.user, User) else None
                hd_grant_comp(animation=animation, by=user, reason=form.cleaned_data["reason"])
            except AnimationNotReady:
                skipped.append("whose preview had not succeeded")
            except AlreadyPaid:
                skipped.append("with the HD result granted already")
            else:
                done += 1
        text = outcome_report("Granted the HD result of", done, skipped, noun="animation")
        modeladmin.message_user(request, text, messages.SUCCESS if done else messages.WARNING)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Grant the HD result as a comp",
        "animations": list(queryset.select_related("job")),
        "form": form,
        "action": "grant_hd_comp",
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/billing/grant_comp.html", context)


register_animation_action(grant_hd_comp)
