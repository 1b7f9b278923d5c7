"""POST /api/v1/jobs/{id}/claim: a signed-in person takes ownership of an anonymous job with its token."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.access import token_from_request
from jobs.selectors import job_detail_queryset
from jobs.serializers import ErrorSerializer, JobSerializer
from rekindle.auth.claims import job_claim


class JobClaimInputSerializer(serializers.Serializer[dict[str, str]]):
    token = serializers.CharField(
        required=False,
        trim_whitespace=True,
        help_text="The job's access token from the upload response (or send it in X-Job-Token).",
    )


class JobClaimView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="jobs_claim",
        summary="Claim an anonymous job",
        description=(
            "The signed-in caller presents the job's access token once and becomes the job's owner: "
            "from then on the job is in their list and opens without the token."
        ),
        parameters=[OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's id.")],
        request=JobClaimInputSerializer,
        responses={
            200: JobSerializer,
            401: OpenApiResponse(ErrorSerializer, description="`not_authenticated`: sign in first."),
            404: OpenApiResponse(ErrorSerializer, description="`not_found`: no such job, or not its token."),
            409: OpenApiResponse(ErrorSerializer, description="`already_claimed`: it belongs to another account."),
        },
        tags=["jobs"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        serializer = JobClaimInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = serializer.validated_data.get("token") or token_from_request(request)
        job = job_claim(job_id=job_id, user=request.user, token=token)  # type: ignore[arg-type]  # IsAuthenticated
        job = job_detail_queryset().get(pk=job.pk)
        return Response(JobSerializer(job, context={"request": request}).data)
