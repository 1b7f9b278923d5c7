"""Small API views under each kind of throttling, for testing the throttles apart from the job API."""

from __future__ import annotations

from django.urls import path
from rest_framework.decorators import api_view, throttle_classes
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rekindle.throttling import throttles_for


class UploadLikeView(APIView):
    throttle_scope = "upload"

    def post(self, request: Request) -> Response:
        return Response({"ok": True}, status=201)


@api_view(["POST"])
@throttle_classes(throttles_for("restore"))
def restore_like(request: Request) -> Response:
    return Response({"ok": True}, status=202)


@api_view(["POST"])
def unthrottled(request: Request) -> Response:
    return Response({"ok": True})


urlpatterns = [
    path("upload", UploadLikeView.as_view()),
    path("restore", restore_like),
    path("free", unthrottled),
]
