"""Two small API views that show who the caller is, for testing authentication apart from the job API."""

from __future__ import annotations

from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response


def _who(request: Request) -> Response:
    user = request.user
    return Response({"authenticated": bool(user and user.is_authenticated), "username": getattr(user, "username", "")})


@api_view(["GET"])
def whoami(request: Request) -> Response:
    return _who(request)


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def private(request: Request) -> Response:
    return _who(request)


urlpatterns = [
    path("whoami", whoami),
    path("private", private),
]
