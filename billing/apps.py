from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.notifications import hd_email_context
        from billing.stripe_api import configure_stripe_module
        from billing.webhooks import connect
        from jobs.notifications import register_email_context

        register_email_context("animate_hd", hd_email_context)
        # After dj-stripe's ready() (INSTALLED_APPS lists it first): its receivers exist to be moved.
        connect()
        configure_stripe_module()
        setting_changed.connect(_stripe_setting_changed, dispatch_uid="billing.stripe_settings")
        post_migrate.connect(_sync_webhook_endpoint, sender=self, dispatch_uid="billing.webhook_endpoint")


def _stripe_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("STRIPE_API_BASE", "STRIPE_MAX_NETWORK_RETRIES", "STRIPE_TIMEOUT_SECONDS"):
        from billing.stripe_api import configure_stripe_module

        configure_stripe_module()


def _sync_webhook_endpoint(*, using: str = "default", **kwargs: Any) -> None:
    # Every `migrate` writes STRIPE_WEBHOOK_SECRET into dj-stripe's endpoint row: a deploy needs nothing else.
    from billing.services import webhook_endpoint_sync

    webhook_endpoint_sync()
