"""The pages people see: the upload page (``/``) and the job page (``/j/<job_id>``, where every email links).

Thin views: each renders its template with what the page's script needs (the upload limits, the
restore workflow's ranges, which engine runs, whether payments are on); the script in
``static/rekindle/`` then talks to the same JSON API as any frontend, so the rules, the access
checks and the errors are the API's. The job's token (given once by the upload) is kept in the
browser's localStorage and sent in ``X-Job-Token``; the email link's ``access`` value is moved from
the address to localStorage on the first load and sent in ``X-Job-Access``: neither appears in a URL
after that. A signed-in owner needs neither (the session cookie). The page headers
(``rekindle.page_headers``) forbid inline script and style, send no Referer and allow no shared cache.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from jobs.access import LINK_QUERY_PARAM, job_link_access_state
from rekindle.engines import engine_label
from rekindle.images import ACCEPTED_FORMATS
from rekindle.page_headers import private_page
from rekindle.workflows import workflow_for_kind

# The buy button's route (billing). Looked up rather than assumed: without it, or without Stripe keys, payments are off.
CHECKOUT_PATH = "/api/v1/jobs/{job_id}/animations/{animation_id}/checkout"


def _common() -> dict[str, Any]:
    development = settings.REKINDLE_ENGINE == "local"
    return {
        "development_engine": engine_label("local") if development else "",
        "retention_days": settings.JOB_RETENTION_DAYS,
    }


@require_safe
@private_page
@ensure_csrf_cookie
def upload_page(request: HttpRequest) -> HttpResponse:
    max_bytes = int(settings.UPLOAD_MAX_BYTES)
    context = {
        **_common(),
        "max_bytes": max_bytes,
        "max_megabytes": f"{max_bytes / 1_000_000:.0f}" if max_bytes >= 1_000_000 else f"{max_bytes / 1_000_000:.2f}",
        # image/jpeg, image/png, image/webp, image/tiff, image/bmp: the server decides by content.
        "accept": ",".join(f"image/{name.lower()}" for name in ACCEPTED_FORMATS),
    }
    return render(request, "pages/upload.html", context)


def payments_on() -> bool:
    """Whether the buy button can work here: the checkout route exists (billing installed) and Stripe keys are set.

    The button still reads the route's own answer (503 ``billing_disabled``), should the two disagree.
    """
    if not settings.STRIPE_SECRET_KEY:
        return False
    some_id = uuid.UUID(int=0)
    try:
        resolve(CHECKOUT_PATH.format(job_id=some_id, animation_id=some_id))
    except Resolver404:
        return False
    return True


@require_safe
@private_page
@ensure_csrf_cookie
def job_page(request: HttpRequest, job_id: str) -> HttpResponse:
    try:
        job_uuid: uuid.UUID | None = uuid.UUID(job_id)
    except ValueError:
        job_uuid = None
    access = request.GET.get(LINK_QUERY_PARAM, "")
    restore = workflow_for_kind("restore")
    seed, denoise = restore.params.get("seed"), restore.params.get("denoise")
    context = {
        **_common(),
        "job_id": str(job_uuid) if job_uuid is not None else "",
        # Whether the email link's access value opens this job: expired links get a fresh one.
        "link_state": job_link_access_state(job_uuid, access) if job_uuid is not None and access else "",
        "link_days": settings.JOB_LINK_MAX_AGE_DAYS,
        "payments": "on" if payments_on() else "off",
        "seed": seed,
        "denoise": denoise,
    }
    status = 200 if job_uuid is not None else 404
    return render(request, "pages/job.html", context, status=status)
