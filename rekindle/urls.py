"""Top-level URL configuration: the pages, the API under /api/v1/ with its schema and docs, the admin, /auth/."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from billing import urls as billing_urls
from rekindle import api_errors
from rekindle.api_docs import ApiDocsView

urlpatterns = [
    # The staff console pages (dashboard, processing nodes) before the admin catches every admin/ path.
    path("admin/", include("rekindle.admin_views")),
    path("admin/", admin.site.urls),
    path("auth/", include("social_django.urls", namespace="social")),
    path("api/v1/", include("jobs.urls")),
    path("api/v1/", include("restoration.urls")),
    path("api/v1/", include("animation.urls")),
    path("api/v1/", include("billing.urls")),
    # Stripe's webhook (billing.views), in dj-stripe's URL namespace.
    path("stripe/", include((billing_urls.webhook_urlpatterns, "djstripe"), namespace="djstripe")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    # The upload page (/) and the job page the emails link to (/j/<id>).
    path("", include("jobs.page_urls")),
]

if settings.DEBUG and not settings.AWS_STORAGE_BUCKET_NAME:
    # Local file storage in development: serve the media folder.
    from django.views.static import serve

    urlpatterns.append(path("media/<path:path>", serve, {"document_root": settings.MEDIA_ROOT}))

handler400 = api_errors.handler400
handler404 = api_errors.handler404
handler500 = api_errors.handler500
