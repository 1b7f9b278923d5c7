"""The headers every page people open answers with: a strict Content Security Policy, no Referer, no shared caching.

- ``Content-Security-Policy``: scripts, styles and connections from this origin only, no inline
  script or style at all (the pages' behaviour is in ``static/``, loaded as files); images and
  videos also from the storage's origin (presigned S3 URLs) and ``blob:`` (the preview of a photo
  before it is sent).
- ``Referrer-Policy: no-referrer``: the email link carries the job's access value in its query,
  and nothing the page loads or links to may learn it.
- ``Cache-Control: private, no-store``: a page of someone's job is never kept by a shared proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


def storage_origins() -> list[str]:
    """Where presigned file URLs point: the S3 endpoint (and its bucket host), plus ``CSP_MEDIA_ORIGINS``."""
    origins: list[str] = list(settings.CSP_MEDIA_ORIGINS)
    bucket = settings.AWS_STORAGE_BUCKET_NAME
    if bucket:
        endpoint = settings.AWS_S3_ENDPOINT_URL
        if endpoint:
            parts = urlsplit(endpoint)
            origins.append(f"{parts.scheme}://{parts.netloc}")
            if settings.AWS_S3_ADDRESSING_STYLE != "path":
                origins.append(f"{parts.scheme}://{bucket}.{parts.netloc}")
        else:
            region = settings.AWS_S3_REGION_NAME
            origins += [
                f"https://{bucket}.s3.amazonaws.com",
                f"https://{bucket}.s3.{region}.amazonaws.com",
                f"https://s3.{region}.amazonaws.com",
            ]
    return list(dict.fromkeys(origins))


def content_security_policy() -> str:
    media = " ".join(["'self'", *storage_origins()])
    directives = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"{media} blob: data:",
        "media-src": media,
        "connect-src": "'self'",
        "font-src": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def add_page_headers(response: HttpResponseBase) -> HttpResponseBase:
    response["Content-Security-Policy"] = content_security_policy()
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    return response


def private_page(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Give a page view's answers the headers above."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return add_page_headers(view(request, *args, **kwargs))

    return wrapped
