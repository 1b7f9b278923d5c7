"""Billing's words in emails: the amount paid in "your HD video is ready", and the refund notice.

The ready email itself belongs to ``jobs.notifications``, which knows nothing of billing:
``billing.apps`` registers :func:`hd_email_context` for the ``animate_hd`` kind through
``jobs.notifications.register_email_context``, and the templates show ``amount_paid``
when it is there. The refund notice is billing's own, sent after the transaction that
recorded the refund commits (once per refund: the conditional UPDATE that records it
runs once).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from billing.models import GRANTS, Purchase, PurchaseKind, PurchaseStatus, format_amount
from jobs.models import Attempt
from jobs.notifications import job_link

logger = logging.getLogger(__name__)


def hd_email_context(attempt: Attempt) -> dict[str, Any]:
    """``amount_paid`` ("9.00 USD") for the HD result's email, when a Stripe payment granted it."""
    animation_id = getattr(attempt, "animation_id", None)
    if animation_id is None:
        return {}
    purchase = (
        Purchase.objects.filter(animation_id=animation_id, kind=PurchaseKind.STRIPE)
        .filter(GRANTS)
        .order_by("-paid_at")
        .first()
    )
    if purchase is None or not purchase.currency:
        return {}
    return {"amount_paid": format_amount(purchase.amount, purchase.currency)}


def refund_notice_send(*, purchase_id: int) -> bool:
    """Tell the buyer what was refunded (and, for all of it, that the HD video is no longer there)."""
    purchase = Purchase.objects.select_related("job").filter(pk=purchase_id).first()
    if purchase is None or not purchase.email or not purchase.amount_refunded:
        return False
    context = {
        "full": purchase.status == PurchaseStatus.REFUNDED,
        "refunded": format_amount(purchase.amount_refunded, purchase.currency),
        "paid": format_amount(purchase.amount, purchase.currency),
        "link": job_link(purchase.job) if purchase.job is not None else "",
        "link_days": settings.JOB_LINK_MAX_AGE_DAYS,
    }
    subject = render_to_string("emails/refund_notice_subject.txt", context).strip()
    context["subject"] = subject
    message = EmailMultiAlternatives(
        subject=subject, body=render_to_string("emails/refund_notice.txt", context), to=[purchase.email]
    )
    message.attach_alternative(render_to_string("emails/refund_notice.html", context), "text/html")
    try:
        message.send()
    except Exception:
        logger.warning("billing.refund_notice_failed purchase=%s", purchase_id, exc_info=True)
        return False
    return True
