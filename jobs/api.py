"""The jobs API: upload a photo, read a job with its attempts, list your jobs, delete a job.

Views validate input, call a service or selector, and serialize; the rules live in
``jobs.services``, ``jobs.selectors`` and ``jobs.access``.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.access import (
    LINK_HEADER,
    LINK_QUERY_PARAM,
    TOKEN_HEADER,
    TOKEN_QUERY_PARAM,
    JobNotFound,
    job_for_request,
    token_from_request,
)
from jobs.backpressure import queue_admit
from jobs.kinds import kind_named
from jobs.live import job_event_stream
from jobs.models import Job
from jobs.notifications import job_link_email_send
from jobs.selectors import job_detail_queryset, job_list_for_owner
from jobs.serializers import (
    ErrorSerializer,
    JobClaimInputSerializer,
    JobCreatedSerializer,
    JobSerializer,
    JobSummarySerializer,
    JobUploadInputSerializer,
)
from jobs.services import job_claim, job_create, job_delete
from rekindle.api_errors import ApiError
from rekindle.images import UploadSizeLimitHandler


class NotSignedIn(ApiError, exceptions.NotAuthenticated):
    # A NotAuthenticated too, so DRF adds the Bearer challenge (WWW-Authenticate) to the 401.
    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "not_authenticated"
    default_detail = "Sign in to list your jobs."


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


TOKEN_PARAMETERS = [
    OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's id."),
    OpenApiParameter(
        TOKEN_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="The job's access token from the upload response (not needed by the job's owner).",
    ),
    OpenApiParameter(
        TOKEN_QUERY_PARAM,
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description=f"The access token, for links where a header cannot be set; `{TOKEN_HEADER}` wins.",
    ),
    OpenApiParameter(
        LINK_QUERY_PARAM,
        OpenApiTypes.STR,
        OpenApiParameter.QUERY,
        description="The signed, expiring access code carried by the links in Rekindle's emails.",
    ),
    OpenApiParameter(
        LINK_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description=f"The same signed access code as `{LINK_QUERY_PARAM}`, for a page that keeps it out of URLs.",
    ),
]
NOT_FOUND = _error("`not_found`: no such job, or it is not yours (the same answer either way).")


class JobUploadView(APIView):
    parser_classes = [MultiPartParser]
    throttle_scope = "upload"

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Set before anything reads the body: the size limit applies while it streams to disk.
        # Should a middleware have parsed the body already, Django refuses new handlers;
        # normalize_image still checks the size, so the limit holds either way.
        with contextlib.suppress(AttributeError):
            request.upload_handlers = [UploadSizeLimitHandler(request), TemporaryFileUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        operation_id="jobs_upload",
        summary="Upload a photo",
        description=(
            "Starts a job from a photo and an email address. The answer carries the job's access token "
            "once; keep it to read or delete the job. A signed-in caller also becomes the job's owner."
        ),
        request={"multipart/form-data": JobUploadInputSerializer},
        responses={
            201: JobCreatedSerializer,
            400: _error(
                "`invalid` (a missing or bad field; `details.fields` names it), `image_too_large` "
                "(too many pixels), or `invalid_image` (truncated or undecodable)."
            ),
            413: _error("`file_too_large`: over the upload size limit."),
            415: _error("`unsupported_media_type`: not a JPEG, PNG, WebP, TIFF or BMP photo (or animated)."),
            429: _error("`throttled`: too many uploads; see `Retry-After`."),
            503: _error(
                "`queue_full` (with `restore=true`): too much work waits; nothing was stored. Try again after "
                "`Retry-After` seconds."
            ),
        },
        tags=["jobs"],
    )
    def post(self, request: Request) -> Response:
        try:
            return self._upload(request)
        finally:
            _discard_upload_files(request)

    def _upload(self, request: Request) -> Response:
        serializer = JobUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data["restore"]:
            # Refused before anything is stored: no file, no job, no attempt.
            queue_admit("restore")
        created = job_create(
            email=serializer.validated_data["email"],
            image=serializer.validated_data["image"],
            owner=request.user if request.user.is_authenticated else None,
        )
        if serializer.validated_data["restore"]:
            create_restore = kind_named("restore").create
            assert create_restore is not None
            create_restore(job=created.job, params=None)
        job = job_detail_queryset().get(pk=created.job.pk)
        data = JobCreatedSerializer(job, context={"request": request, "token": created.token}).data
        return Response(data, status=status.HTTP_201_CREATED)


def _discard_upload_files(request: Request) -> None:
    """Delete this request's temporary upload files now, whatever refused it (or once it is stored).

    Django deletes a completed upload's file when the request is closed, but the file of
    an upload cut off mid-stream (over the size limit) belongs only to the handler that
    was writing it, and stays until the garbage collector finds it: seconds to hours of
    disk and an open descriptor per refused upload.
    """
    for handler in getattr(request._request, "upload_handlers", ()):
        if isinstance(handler, TemporaryFileUploadHandler) and getattr(handler, "file", None) is not None:
            handler.file.close()  # a NamedTemporaryFile: closing removes it


def _positive_int_param(request: Request, name: str) -> int | None:
    """A query parameter that must be a whole number from 1 up, or absent; anything else is a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise exceptions.ValidationError({name: ["A whole number from 1 up."]})
    return int(raw)


class JobPagination(PageNumberPagination):
    # DRF would quietly fall back to the default page size on a bad value, and call a
    # malformed page number "not found"; a client's mistake gets a 400 naming it instead.
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Request) -> int | None:
        requested = _positive_int_param(request, self.page_size_query_param)
        if requested is None:
            return int(settings.JOBS_PAGE_SIZE)
        return min(requested, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> int:
        return _positive_int_param(request, self.page_query_param) or 1

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Jobs per page, from 1; more than {self.max_page_size} gives {self.max_page_size}."
                )
        return parameters


class JobListView(generics.ListAPIView[Job]):
    serializer_class = JobSummarySerializer
    pagination_class = JobPagination

    def get_queryset(self) -> QuerySet[Job]:
        return job_list_for_owner(owner=self.request.user)  # type: ignore[arg-type]  # checked in get()

    @extend_schema(
        operation_id="jobs_list",
        summary="List your jobs",
        description="The signed-in caller's jobs, newest first, a page at a time.",
        responses={
            200: JobSummarySerializer(many=True),
            400: _error("`invalid`: `page` or `page_size` is not a whole number from 1 up (`details.fields`)."),
            401: _error("`not_authenticated`: sign in first."),
            404: _error("`not_found`: the page number is past the end."),
        },
        tags=["jobs"],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not request.user.is_authenticated:
            raise NotSignedIn()
        return super().get(request, *args, **kwargs)


class JobDetailView(APIView):
    @extend_schema(
        operation_id="jobs_retrieve",
        summary="Read a job",
        description=(
            "The job with every restore and animation attempt, oldest first. File URLs are made on "
            "demand and expire (presigned on S3): fetch the job again for fresh ones."
        ),
        parameters=TOKEN_PARAMETERS,
        responses={200: JobSerializer, 404: NOT_FOUND},
        tags=["jobs"],
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = job_for_request(request, job_id, queryset=job_detail_queryset())
        return Response(JobSerializer(job, context={"request": request}).data)

    @extend_schema(
        operation_id="jobs_destroy",
        summary="Delete a job",
        description="Deletes the job and its attempts at once; its stored files are removed shortly after.",
        parameters=TOKEN_PARAMETERS,
        responses={204: OpenApiResponse(description="Deleted."), 404: NOT_FOUND},
        tags=["jobs"],
    )
    def delete(self, request: Request, job_id: str) -> Response:
        job = job_for_request(request, job_id)
        job_delete(job=job)
        return Response(status=status.HTTP_204_NO_CONTENT)


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
            401: _error("`not_authenticated`: sign in first."),
            404: _error("`not_found`: no such job, or not its token."),
            409: _error("`already_claimed`: it belongs to another account."),
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


class EventStreamRenderer(BaseRenderer):
    """Lets a client ask for ``text/event-stream``; the stream itself is written by ``jobs.live``."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return JSONRenderer().render(data)


EVENTS_DESCRIPTION = """Server-Sent Events with the live state of the job, while something is queued or running.

Events, each `data` one JSON object:

- `job`: `{"id", "selected_restore", "latest_animation"}`, first and whenever it changes.
- `attempt`: `{"kind", "id", "parent", "status", "progress", "error"}` for every attempt of every kind
  (`restore`, `animate_preview`, `animate_hd`; `parent` is the animation an HD run belongs to),
  first and whenever one of those values changes; `error` is `{"code", "message"}` as in `GET /jobs/{id}`.
- `end`: `{"reason"}`, then the stream closes: `settled` (nothing is queued or running: read
  `GET /jobs/{id}` for the results), `deleted`, or `timeout` (open it again).

A comment line (`: keep-alive`) comes every 15 seconds. Access is as for `GET /jobs/{id}`; send the
token in `X-Job-Token` (or the email link's value in `X-Job-Access`) so it stays out of URLs.
If the stream cannot be opened, poll `GET /jobs/{id}`."""


class JobEventsView(APIView):
    # JSON first: errors, and callers that ask for nothing in particular, get the API's error shape.
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="jobs_events",
        summary="Follow a job live",
        description=EVENTS_DESCRIPTION,
        parameters=TOKEN_PARAMETERS,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="The event stream (`event:` and `data:` lines, UTF-8)."
            ),
            404: NOT_FOUND,
        },
        tags=["jobs"],
    )
    def get(self, request: Request, job_id: str) -> HttpResponseBase:
        # Runs in a thread for the access check only; the stream itself is a coroutine in the event loop.
        job = job_for_request(request, job_id)
        response = StreamingHttpResponse(job_event_stream(str(job.pk)), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache, private"
        response["X-Accel-Buffering"] = "no"  # nginx and its kin: pass each event on at once
        return response

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response):  # an error: always in the API's JSON shape
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class JobSendLinkView(APIView):
    throttle_scope = "link"

    @extend_schema(
        operation_id="jobs_send_link",
        summary="Email a fresh link to the job",
        description=(
            "For someone whose email link expired: a new link goes to the address the job was uploaded "
            "with (at most one every few minutes per job). The answer is the same whether or not the job "
            "exists, so it tells nobody anything."
        ),
        parameters=[OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's id.")],
        request=None,
        responses={
            202: OpenApiResponse(description='Sent if the job exists: `{"message"}` says so in words.'),
            404: _error("`not_found`: the id is not a job id at all (not a UUID)."),
            429: _error("`throttled`: too many requests; see `Retry-After`."),
        },
        tags=["jobs"],
    )
    def post(self, request: Request, job_id: str) -> Response:
        # A malformed id can never be a job, so refusing it tells nobody whether some job exists.
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise JobNotFound() from None
        job_link_email_send(job_id=job_id)
        message = "If this job still exists, a new link is on its way to the email address it was uploaded with."
        return Response({"message": message}, status=status.HTTP_202_ACCEPTED)
