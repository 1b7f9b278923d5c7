"""The animation API: queue an animation preview of a restored photo."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from animation.serializers import AnimateInputSerializer, AnimationAttemptSerializer
from animation.services import animation_attempt_create
from jobs.access import job_for_request
from jobs.api import NOT_FOUND, TOKEN_PARAMETERS
from jobs.serializers import ErrorSerializer


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class AnimateView(APIView):
    throttle_scope = "animate"

    @extend_schema(
        operation_id="jobs_animate",
        summary="Queue an animation preview",
        description=(
            "Queues a short video preview of a succeeded restore (the job's selected restore unless "
            "`restore_id` names another) and answers at once with the queued attempt. The HD result "
            "is made once it is paid for."
        ),
        parameters=TOKEN_PARAMETERS,
        request=AnimateInputSerializer,
        responses={
            202: AnimationAttemptSerializer,
            400: _error("`invalid_parameters`: `details.fields` says what is wrong with each parameter."),
            404: NOT_FOUND,
            409: _error(
                "`no_restore_to_animate`: no succeeded restore to start from; `too_many_in_flight`: the job "
                "already has as many attempts queued or running as it may."
            ),
            429: _error("`throttled`: too many requests; see `Retry-After`."),
            503: _error(
                "`queue_full`: too much work waits in the queue; nothing was queued. Try again after "
                "`Retry-After` seconds (from the measured throughput)."
            ),
        },
        tags=["animation"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_for_request(request, job_id)
        serializer = AnimateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        attempt = animation_attempt_create(
            job=job,
            restore_id=serializer.validated_data["restore_id"],
            params=serializer.validated_data["parameters"],
        )
        data = AnimationAttemptSerializer(attempt, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
