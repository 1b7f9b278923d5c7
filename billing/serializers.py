"""Output shape of the checkout API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class CheckoutSerializer(serializers.Serializer[Any]):
    checkout_url = serializers.URLField(help_text="Send the person here to pay (Stripe Checkout).")
    session_id = serializers.CharField(help_text="The Stripe Checkout Session id.")
    expires_at = serializers.DateTimeField(help_text="After this the session can no longer be paid.")
