"""Routes of billing: the checkout API under /api/v1/ (``urlpatterns``), Stripe's webhook (``webhook_urlpatterns``)."""

from django.urls import URLPattern, URLResolver, path

from billing import api, views

urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "jobs/<str:job_id>/animations/<str:animation_id>/checkout",
        api.CheckoutView.as_view(),
        name="jobs-animation-checkout",
    ),
]

# Under /stripe/, in dj-stripe's namespace (its admin reverses the by-uuid route). /stripe/webhook/ is the
# endpoint the settings describe (register it in Stripe's dashboard); /stripe/webhook/<uuid>/ is dj-stripe's
# route for any WebhookEndpoint row, with the same signature check first.
webhook_urlpatterns: list[URLPattern | URLResolver] = [
    path("webhook/", views.StripeWebhookView.as_view(), name="webhook"),
    path("webhook/<uuid:uuid>/", views.StripeWebhookView.as_view(), name="djstripe_webhook_by_uuid"),
]
