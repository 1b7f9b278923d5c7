"""dj-stripe's WebhookEndpoint row comes from STRIPE_WEBHOOK_SECRET: by `migrate`, or by the command."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from djstripe.models import Account, APIKey, WebhookEndpoint

from billing.services import WEBHOOK_ENDPOINT_UUID, WEBHOOK_EVENTS
from rekindle.testing.stripe_stub import ACCOUNT_ID, StripeStub

pytestmark = pytest.mark.django_db


def test_it_writes_the_secret_at_each_migrate(settings: Any) -> None:
    settings.STRIPE_WEBHOOK_SECRET = "whsec_first_secret_0000000000000"
    call_command("migrate", verbosity=0)
    settings.STRIPE_WEBHOOK_SECRET = "whsec_rotated_secret_00000000000"
    call_command("migrate", verbosity=0)

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.djstripe_uuid == WEBHOOK_ENDPOINT_UUID
    assert endpoint.secret == "whsec_rotated_secret_00000000000"
    assert endpoint.url == "http://127.0.0.1:8000/stripe/webhook/"
    assert endpoint.enabled_events == list(WEBHOOK_EVENTS)
    assert endpoint.djstripe_validation_method == "verify_signature"
    assert endpoint.djstripe_tolerance == 300


def test_it_makes_no_endpoint_without_a_secret(settings: Any) -> None:
    settings.STRIPE_WEBHOOK_SECRET = ""
    call_command("migrate", verbosity=0)

    assert not WebhookEndpoint.objects.exists()
    with pytest.raises(CommandError, match="STRIPE_WEBHOOK_SECRET"):
        call_command("sync_stripe_webhook_endpoint")


def test_the_command_says_what_to_register_and_learns_the_account_once(stripe_stub: StripeStub) -> None:
    out = io.StringIO()
    call_command("sync_stripe_webhook_endpoint", stdout=out)
    call_command("sync_stripe_webhook_endpoint", stdout=out)

    assert "Webhook endpoint http://127.0.0.1:8000/stripe/webhook/" in out.getvalue()
    assert "checkout.session.completed, checkout.session.async_payment_succeeded" in out.getvalue()
    assert WebhookEndpoint.objects.get().secret == stripe_stub.webhook_secret
    assert APIKey.objects.get(secret=stripe_stub.secret_key).djstripe_owner_account == Account.objects.get(
        id=ACCOUNT_ID
    )
    assert stripe_stub.calls("GET", "/v1/account") == ["/v1/account"]


def test_a_webhook_without_an_endpoint_set_up_answers_404(client: Any) -> None:
    response = client.post("/stripe/webhook/", data="{}", content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "billing_disabled"
