"""The calls billing makes to Stripe's API, each returning plain dicts (the shape of webhook payloads).

Every call is a network call: callers make them with no database transaction open. A
Stripe that cannot be reached, times out, answers 5xx or throttles raises
:class:`PaymentProviderUnavailable` (503 with ``Retry-After``); a refused request
(Stripe's 4xx) raises :class:`StripeRefused` with Stripe's message, for the caller to
decide. The API base, timeout and retries come from the settings at each call
(``STRIPE_API_BASE`` is only for testing against ``rekindle.testing.stripe_stub``).

``configure_stripe_module`` points the ``stripe`` module's globals, which dj-stripe's
sync uses, at the same base; ``billing.apps`` calls it at start-up and whenever a test
changes the setting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

import stripe
from django.conf import settings

from rekindle.errors import Unavailable

logger = logging.getLogger(__name__)

# Seconds a client is told to wait before trying again when Stripe is unreachable.
RETRY_AFTER_SECONDS = 30


class PaymentProviderUnavailable(Unavailable):
    code = "payment_provider_unavailable"
    message = "The payment provider cannot be reached right now; nothing was charged. Try again in a moment."


class StripeRefused(Exception):
    """Stripe refused the request (a 4xx): ``code`` is Stripe's error code, when it gave one."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def configure_stripe_module() -> None:
    """Point the ``stripe`` module (what dj-stripe calls) at ``STRIPE_API_BASE``."""
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES
    stripe.default_http_client = stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS)


def client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
    )


def _plain(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict())


def _call(what: str, request: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return request(*args, **kwargs)
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
        logger.warning("stripe.unavailable what=%s error=%s", what, exc)
        raise PaymentProviderUnavailable(retry_after=RETRY_AFTER_SECONDS, details={"what": what}) from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        # Our key is wrong or lacks a permission: the deployment's fault, not the customer's.
        logger.error("stripe.key_refused what=%s error=%s", what, exc)
        raise PaymentProviderUnavailable(retry_after=RETRY_AFTER_SECONDS, details={"what": what}) from exc
    except stripe.StripeError as exc:
        raise StripeRefused(str(exc.user_message or exc), code=str(exc.code or ""), status=exc.http_status) from exc


def account_retrieve() -> dict[str, Any]:
    """The Stripe account the secret key belongs to."""
    return _plain(_call("account_retrieve", client().v1.accounts.retrieve_current))


def checkout_session_create(params: Mapping[str, Any]) -> dict[str, Any]:
    sessions = client().v1.checkout.sessions
    return _plain(_call("checkout_session_create", sessions.create, params=dict(params)))


def checkout_session_retrieve(session_id: str, *, expand: list[str] | None = None) -> dict[str, Any]:
    sessions = client().v1.checkout.sessions
    params = {"expand": expand} if expand else None
    return _plain(_call("checkout_session_retrieve", sessions.retrieve, session_id, params=params))


def checkout_session_expire(session_id: str) -> dict[str, Any]:
    sessions = client().v1.checkout.sessions
    return _plain(_call("checkout_session_expire", sessions.expire, session_id))


def checkout_sessions_created_since(created_gte: int, *, expand: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every Checkout Session created at or after ``created_gte`` (unix seconds), newest first, page by page."""
    sessions = client().v1.checkout.sessions
    params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": 100}
    if expand:
        params["expand"] = expand
    page = _call("checkout_sessions_list", sessions.list, params=params)
    pages = page.auto_paging_iter()
    while True:
        try:
            item = _call("checkout_sessions_list", next, pages)
        except StopIteration:
            return
        yield _plain(item)


def refund_create(*, payment_intent: str, idempotency_key: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    """Refund what is left of a payment (Stripe refunds the rest when no amount is given)."""
    refunds = client().v1.refunds
    params = {"payment_intent": payment_intent, "reason": "requested_by_customer", "metadata": dict(metadata)}
    return _plain(_call("refund_create", refunds.create, params=params, options={"idempotency_key": idempotency_key}))
