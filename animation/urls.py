"""API routes of animations under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from animation import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("jobs/<str:job_id>/animate", api.AnimateView.as_view(), name="jobs-animate"),
]
