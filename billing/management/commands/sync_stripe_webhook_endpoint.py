"""Write STRIPE_WEBHOOK_SECRET into dj-stripe's WebhookEndpoint row (``migrate`` does it too) and say what to register.

Run it after changing the secret without a migrate (rotating it in Stripe's dashboard).
It also fetches the Stripe account of STRIPE_SECRET_KEY once, which dj-stripe needs for
every event it records, so the first webhook does not have to.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.services import WEBHOOK_EVENTS, stripe_owner_account_ensure, webhook_endpoint_sync


class Command(BaseCommand):
    help = "Write STRIPE_WEBHOOK_SECRET into dj-stripe's webhook endpoint; print the URL and events to register."

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = webhook_endpoint_sync()
        if endpoint is None:
            raise CommandError("STRIPE_WEBHOOK_SECRET is not set.")
        stripe_owner_account_ensure()
        self.stdout.write(f"Webhook endpoint {endpoint.url}")
        self.stdout.write(f"Events to enable in Stripe: {', '.join(WEBHOOK_EVENTS)}")
