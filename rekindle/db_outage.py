"""The database being away (restarted, failing over, unreachable) as an outage, not a bug.

A request that meets a lost or refused database connection is answered 503
``database_unavailable`` with ``Retry-After`` (the API's exception handler, the middleware
below for every other view, and ``handler500`` for what a middleware raised), never a 500:
nothing the client sent was wrong, and asking again shortly will work. Only errors of the
connection itself count (no connection, a connection the server ended, a server starting or
shutting down); a query the database refuses (a constraint, a syntax error) stays a bug.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

from rekindle import errors

logger = logging.getLogger(__name__)

# What a client is told to wait before asking again (seconds): a restart or a failover takes a few.
RETRY_AFTER_SECONDS = 5

# SQLSTATE classes and codes that mean the connection, not the query: 08 (connection exception),
# 57P01-57P03 (administrator or crash shutdown, cannot connect now: the server is starting or stopping).
_CONNECTION_SQLSTATE_CLASSES = ("08",)
_CONNECTION_SQLSTATES = {"57P01", "57P02", "57P03"}


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database connection failing (not the database refusing a query)."""
    if isinstance(exc, InterfaceError):
        return True  # "connection already closed" and the like
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__ or exc.__context__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:
        # No SQLSTATE: the driver itself lost or could not open the connection (refused, reset, closed).
        return True
    return str(sqlstate).startswith(_CONNECTION_SQLSTATE_CLASSES) or sqlstate in _CONNECTION_SQLSTATES


def database_unavailable() -> errors.DatabaseUnavailable:
    return errors.DatabaseUnavailable(retry_after=RETRY_AFTER_SECONDS)


def database_unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 for any view: the API's JSON error shape, or a short page for a person in a browser."""
    error = database_unavailable()
    logger.warning("database.unavailable path=%s error=%s", request.path, type(exc).__name__)
    response: HttpResponse
    if _wants_json(request):
        body = {"error": {"code": error.code, "message": error.message, "details": {}}}
        response = JsonResponse(body, status=503)
    else:
        text = escape(error.message)
        page = f'<!doctype html><html lang="en"><title>Rekindle</title><p role="alert">{text}</p></html>'
        response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def _wants_json(request: HttpRequest) -> bool:
    if request.path.startswith(("/api/", "/stripe/")):
        return True
    return "text/html" not in request.headers.get("Accept", "")


class DatabaseOutageMiddleware:
    """Answers a view's lost database connection with the 503 above (DRF views answer it themselves)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_connection_error(exception):
            return database_unavailable_response(request, exception)
        return None
