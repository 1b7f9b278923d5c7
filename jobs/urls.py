"""API routes under /api/v1/.

Job ids are taken as plain strings here and parsed by ``jobs.access``, so a malformed
id gets the same 404 as an unknown one.
"""

from django.urls import URLPattern, URLResolver, path

from animation import api as animation_api
from jobs import api
from rekindle.auth import api as auth_api
from restoration import api as restoration_api

urlpatterns: list[URLPattern | URLResolver] = [
    path("jobs", api.JobListView.as_view(), name="jobs-list"),
    path("jobs/upload", api.JobUploadView.as_view(), name="jobs-upload"),
    path("jobs/<str:job_id>", api.JobDetailView.as_view(), name="jobs-detail"),
    path("jobs/<str:job_id>/restore", restoration_api.RestoreView.as_view(), name="jobs-restore"),
    path("jobs/<str:job_id>/select-restore", restoration_api.SelectRestoreView.as_view(), name="jobs-select-restore"),
    path("jobs/<str:job_id>/animate", animation_api.AnimateView.as_view(), name="jobs-animate"),
    path("jobs/<str:job_id>/claim", auth_api.JobClaimView.as_view(), name="jobs-claim"),
]
