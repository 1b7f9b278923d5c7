"""The project's URLs plus a checkout route, as the billing app adds it (for the job page's payments switch)."""

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from rekindle.urls import urlpatterns as project_urlpatterns


def checkout(request: HttpRequest, job_id: str, animation_id: str) -> HttpResponse:
    return HttpResponse(status=201)


urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/jobs/<str:job_id>/animations/<str:animation_id>/checkout", checkout),
    *(pattern for pattern in project_urlpatterns if isinstance(pattern, URLPattern | URLResolver)),
]
