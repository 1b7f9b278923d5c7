"""API routes of jobs under /api/v1/ (each app adds its own routes under jobs/<id>/).

Job ids are taken as plain strings here and parsed by ``jobs.access``, so a malformed
id gets the same 404 as an unknown one.
"""

from django.urls import URLPattern, URLResolver, path

from jobs import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("jobs", api.JobListView.as_view(), name="jobs-list"),
    path("jobs/upload", api.JobUploadView.as_view(), name="jobs-upload"),
    path("jobs/<str:job_id>", api.JobDetailView.as_view(), name="jobs-detail"),
    path("jobs/<str:job_id>/claim", api.JobClaimView.as_view(), name="jobs-claim"),
    path("jobs/<str:job_id>/events", api.JobEventsView.as_view(), name="jobs-events"),
    path("jobs/<str:job_id>/send-link", api.JobSendLinkView.as_view(), name="jobs-send-link"),
]
