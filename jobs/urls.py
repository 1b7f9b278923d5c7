"""API routes under /api/v1/.

Job ids are taken as plain strings here and parsed by ``jobs.access``, so a malformed
id gets the same 404 as an unknown one.
"""

from django.urls import URLPattern, URLResolver, path

from jobs import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("jobs", api.JobListView.as_view(), name="jobs-list"),
    path("jobs/upload", api.JobUploadView.as_view(), name="jobs-upload"),
    path("jobs/<str:job_id>", api.JobDetailView.as_view(), name="jobs-detail"),
]
