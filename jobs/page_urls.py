"""Routes of the pages people open: the upload page and the job page the emails link to."""

from django.urls import URLPattern, URLResolver, path

from jobs import pages

urlpatterns: list[URLPattern | URLResolver] = [
    path("", pages.upload_page, name="page-upload"),
    path("j/<str:job_id>", pages.job_page, name="page-job"),
]
