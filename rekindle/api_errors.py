"""One error shape for the whole API: ``{"error": {"code", "message", "details"}}``.

The services' errors (``rekindle.errors``) get their HTTP status here, in
:data:`STATUS_OF`, and nowhere else. DRF's own exceptions (validation, 404, 405,
throttling, authentication) and the API's own ``ApiError`` subclasses come out in
the same shape with their status.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from rekindle import errors, metrics, storage
from rekindle.db_outage import database_unavailable, database_unavailable_response, is_connection_error

logger = logging.getLogger(__name__)

# What a client is told to wait when the photo storage fails for now (seconds).
STORAGE_RETRY_AFTER_SECONDS = 10


class ApiError(exceptions.APIException):
    """An error the API layer itself finds in a request (before any service runs), with a stable code."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"
    default_detail = "The request is not valid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail=message or self.default_detail, code=code or self.default_code)
        self.error_code = code or self.default_code
        self.details = details or {}
        if status_code is not None:
            self.status_code = status_code


# The HTTP status of each kind of service error; a subclass takes its nearest base's.
STATUS_OF: dict[type[errors.ServiceError], int] = {
    errors.InvalidRequest: status.HTTP_400_BAD_REQUEST,
    errors.NotFound: status.HTTP_404_NOT_FOUND,
    errors.Conflict: status.HTTP_409_CONFLICT,
    errors.TooLarge: status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    errors.UnsupportedMedia: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    errors.Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def status_of(exc: errors.ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return status.HTTP_400_BAD_REQUEST


def service_error_response(exc: errors.ServiceError) -> Response:
    """The API's answer to a service error: its status, the error shape, and ``Retry-After`` when known."""
    response = Response(error_body(exc.code, exc.message, exc.details), status=status_of(exc))
    if isinstance(exc, errors.Unavailable) and exc.retry_after is not None:
        response["Retry-After"] = str(max(int(exc.retry_after), 1))
    return response


_CODES_BY_STATUS = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail: Any) -> Any:
    """DRF's ErrorDetail tree as plain lists and dicts of strings."""
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if is_connection_error(exc):
        # The database is away (a restart, a failover): an outage to wait out, not a bug.
        logger.warning("database.unavailable view=%s error=%s", type(context.get("view")).__name__, type(exc).__name__)
        exc = database_unavailable()
    if isinstance(exc, errors.ServiceError):
        set_rollback()
        return service_error_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django raises these while parsing a body; left alone they become an HTML 400.
        exc = ApiError(
            "The request body is too large.",
            code="request_too_large",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    elif isinstance(exc, SuspiciousOperation):
        exc = ApiError("The request is malformed.", code="bad_request")
    elif isinstance(exc, ClientError | BotoCoreError):
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        metrics.STORAGE_ERRORS.labels(where="api", error_type=str(code or type(exc).__name__)).inc()
        if storage.is_transient_error(exc):
            # S3 failing or slow for now: an outage to wait out. Anything else (access denied, a
            # missing bucket) is a configuration bug and stays Django's 500.
            # Logged with its traceback at error level: the operator's alerting (and Sentry) should hear of it.
            logger.error("storage.unavailable view=%s", type(context.get("view")).__name__, exc_info=exc)
            set_rollback()
            return service_error_response(errors.StorageUnavailable(retry_after=STORAGE_RETRY_AFTER_SECONDS))

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django's 500 handling takes over

    if isinstance(exc, ApiError):
        body = error_body(exc.error_code, str(exc.detail), exc.details)
    elif isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
        body = error_body("invalid", "The request has invalid fields.", {"fields": details})
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = _CODES_BY_STATUS.get(response.status_code, "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            if isinstance(codes, str) and codes not in ("invalid", "error"):
                code = codes
        body = error_body(code, str(detail))
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            body["error"]["details"] = {"retry_after_seconds": math.ceil(wait)}
    response.data = body
    return response


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    # Raised before any view runs (a Host header not allowed, a malformed cookie or body):
    # API callers get the error shape, people in a browser Django's own page.
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("bad_request", "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse(error_body("not_found", "Nothing is here."), status=404)


def handler500(request: HttpRequest) -> HttpResponse:
    # Called while the error is being handled: a middleware's lost database connection is an outage too.
    current = sys.exc_info()[1]
    if current is not None and is_connection_error(current):
        return database_unavailable_response(request, current)
    return JsonResponse(error_body("server_error", "Something went wrong on our side; it has been logged."), status=500)
