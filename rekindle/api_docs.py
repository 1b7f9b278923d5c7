"""The browsable API documentation at ``/api/docs/``: Swagger UI from this server's own files, under a CSP.

Swagger UI's files come from drf-spectacular-sidecar through the static files
(``SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"] = "SIDECAR"``), so the page loads nothing from
another origin and works where a CDN is blocked or down. The page's start-up script is
served as a file of its own (drf-spectacular's split view), and the template drops the
package's inline ``<style>``, so the policy needs no inline script or style element.
Swagger UI itself sets ``style`` attributes (React) and draws its icons from ``data:`` SVGs:
the policy allows exactly those two.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

DOCS_CSP = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "style-src-attr": "'unsafe-inline'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


def docs_content_security_policy() -> str:
    return "; ".join(f"{name} {value}" for name, value in DOCS_CSP.items())


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI over ``/api/schema/``, every asset from this origin."""

    template_name = "api_docs.html"

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        response["Content-Security-Policy"] = docs_content_security_policy()
        response["Referrer-Policy"] = "no-referrer"
        return response
