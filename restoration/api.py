"""The restoration API: queue a restore attempt of a job, and pick the attempt to keep."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.access import job_for_request
from jobs.api import NOT_FOUND, TOKEN_PARAMETERS
from jobs.selectors import job_detail_queryset
from jobs.serializers import ErrorSerializer, JobSerializer
from restoration.serializers import RestoreAttemptSerializer, RestoreInputSerializer, SelectRestoreInputSerializer
from restoration.services import restore_attempt_create, restore_select


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


TOO_MANY = _error("`too_many_in_flight`: the job already has as many attempts queued or running as it may.")


class RestoreView(APIView):
    throttle_scope = "restore"

    @extend_schema(
        operation_id="jobs_restore",
        summary="Queue a restore attempt",
        description=(
            "Queues another restoration of the job's photo with these parameters and answers at once "
            "with the queued attempt; follow it on `GET /jobs/{id}`. An email is sent when it is done."
        ),
        parameters=TOKEN_PARAMETERS,
        request=RestoreInputSerializer,
        responses={
            202: RestoreAttemptSerializer,
            400: _error("`invalid_parameters`: `details.fields` says what is wrong with each parameter."),
            404: NOT_FOUND,
            409: TOO_MANY,
            429: _error("`throttled`: too many requests; see `Retry-After`."),
            503: _error(
                "`queue_full`: too much work waits in the queue; nothing was queued. Try again after "
                "`Retry-After` seconds (from the measured throughput)."
            ),
        },
        tags=["restoration"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_for_request(request, job_id)
        serializer = RestoreInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        attempt = restore_attempt_create(job=job, params=serializer.validated_data["parameters"])
        data = RestoreAttemptSerializer(attempt, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class SelectRestoreView(APIView):
    @extend_schema(
        operation_id="jobs_select_restore",
        summary="Pick the restore to keep",
        description="Makes a succeeded restore attempt the job's selected restore (the one animations start from).",
        parameters=TOKEN_PARAMETERS,
        request=SelectRestoreInputSerializer,
        responses={
            200: JobSerializer,
            400: _error("`invalid`: `restore_id` is missing or not a UUID."),
            404: NOT_FOUND,
            409: _error("`restore_not_selectable`: not a succeeded restore attempt of this job."),
        },
        tags=["restoration"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = job_for_request(request, job_id)
        serializer = SelectRestoreInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        restore_select(job=job, restore_id=serializer.validated_data["restore_id"])
        fresh = job_detail_queryset().get(pk=job.pk)
        return Response(JobSerializer(fresh, context={"request": request}).data)
