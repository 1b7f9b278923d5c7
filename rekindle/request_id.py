"""A request id on every request: taken from ``X-Request-ID`` when it is sane, made otherwise, returned, and logged.

A proxy or load balancer in front (or the frontend) may already have named the request; keeping
its id lets one search find the request in every system's logs. The header is the client's,
though, so it is only taken when short and made of safe characters (no spaces, quotes, control
characters or anything a log viewer could be fooled by); anything else is replaced by a fresh id,
never echoed.

The id is bound with ``structlog.contextvars`` for the whole request, so every line logged while
it runs carries ``request_id`` (Django's, DRF's, the services', the access log of uvicorn and
gunicorn), and Dramatiq messages sent meanwhile carry it into the worker
(``rekindle.log_context.RequestIdMessages``). Under ASGI each request runs in a context of its
own and the binding goes with it into the threads Django runs sync code in; under WSGI a thread
serves one request after another, so the fields are cleared when a request starts, not when it
ends (the server's access line, written after the answer, still carries the id; so does the
streamed body of an event stream).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# Letters, digits and the punctuation ids use (UUIDs, AWS's Root=1-..., Heroku's, Cloudflare's ray ids).
_SAFE = re.compile(rf"[A-Za-z0-9._:=+/@-]{{1,{MAX_LENGTH}}}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(value: str | None) -> str:
    """The id to use for a request whose ``X-Request-ID`` is ``value``: that value if safe, else a new one."""
    if value is not None and _SAFE.fullmatch(value):
        return value
    return new_request_id()


def _begin(request: HttpRequest) -> str:
    request_id = request_id_from(request.headers.get(HEADER))
    request.request_id = request_id  # type: ignore[attr-defined]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


def _answer(response: HttpResponseBase, request_id: str) -> HttpResponseBase:
    response[HEADER] = request_id
    return response


@sync_and_async_middleware
def request_id_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            request_id = _begin(request)
            return _answer(await get_response(request), request_id)

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        request_id = _begin(request)
        return _answer(get_response(request), request_id)

    return sync_middleware
