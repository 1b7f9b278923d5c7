"""API routes of restorations under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

from restoration import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("jobs/<str:job_id>/restore", api.RestoreView.as_view(), name="jobs-restore"),
    path("jobs/<str:job_id>/select-restore", api.SelectRestoreView.as_view(), name="jobs-select-restore"),
]
