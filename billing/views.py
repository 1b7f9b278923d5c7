"""Stripe's webhook endpoint: dj-stripe's own view, with the signature checked before anything is stored.

dj-stripe's ``ProcessWebhookView`` records every request it gets (a ``WebhookEventTrigger``,
headers and body) before verifying it, so forged posts would fill the table; and in
``DEBUG`` it takes the secret from a request header. :class:`StripeWebhookView` first
checks the ``Stripe-Signature`` header (``t=...,v1=HMAC-SHA256``, within
``STRIPE_WEBHOOK_TOLERANCE_SECONDS``) against the endpoint row's own secret, with
``stripe``'s ``WebhookSignature``, and answers a JSON 400 without writing anything when it
does not hold; then dj-stripe's view does the rest (and checks it again).

dj-stripe looks up the Stripe account of the API key when it records an event, calling
``GET /v1/account`` inside its transaction the first time; the view makes that call
before, with no transaction open (``stripe_owner_account_ensure``), so it is never made
inside one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import stripe
from django.http import HttpRequest, HttpResponse, JsonResponse
from djstripe.models import WebhookEndpoint
from djstripe.views import ProcessWebhookView

from billing.services import WEBHOOK_ENDPOINT_UUID, stripe_owner_account_ensure
from rekindle import metrics
from rekindle.api_errors import error_body

logger = logging.getLogger(__name__)


class StripeWebhookView(ProcessWebhookView):  # type: ignore[misc]  # dj-stripe ships no types
    def post(self, request: HttpRequest, uuid: uuid.UUID = WEBHOOK_ENDPOINT_UUID, **kwargs: Any) -> HttpResponse:
        endpoint = WebhookEndpoint.objects.filter(djstripe_uuid=uuid).first()
        if endpoint is None or not endpoint.secret:
            return JsonResponse(
                error_body("billing_disabled", "No Stripe webhook endpoint is set up here (STRIPE_WEBHOOK_SECRET)."),
                status=404,
            )
        try:
            stripe.WebhookSignature.verify_header(
                request.body, request.headers.get("Stripe-Signature"), endpoint.secret, endpoint.djstripe_tolerance
            )
        except stripe.SignatureVerificationError as exc:
            logger.warning("billing.webhook_refused reason=%s", exc.user_message or exc)
            metrics.WEBHOOK_EVENTS.labels(event_type="unverified", outcome="bad_signature").inc()
            return JsonResponse(
                error_body("bad_signature", "The Stripe-Signature header is missing, wrong or too old."), status=400
            )
        stripe_owner_account_ensure()
        response: HttpResponse = super().post(request, uuid)
        return response
