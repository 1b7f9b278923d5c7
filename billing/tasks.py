"""Background work of billing: ``sync_stripe_objects`` lets dj-stripe sync what a webhook was about.

Our own state moves in the webhook request itself (``billing.webhooks``); this actor only
keeps dj-stripe's copy of the Stripe objects (its Event, the Checkout Session, the charge,
the dispute) and links the purchase to them. It calls Stripe's API, which may be down:
it retries with backoff, and a sync that never succeeds loses nothing of ours.
"""

from __future__ import annotations

import dramatiq

from billing.webhooks import stripe_objects_sync


@dramatiq.actor(queue_name="billing", max_retries=8, min_backoff=5_000, max_backoff=600_000, time_limit=120_000)
def sync_stripe_objects(event_id: str) -> None:
    stripe_objects_sync(event_id=event_id)
