"""API answers are for their caller alone: never stored by a shared cache, never kept by the browser.

A job's answer carries presigned URLs of a family's photos and is read with a token or a
signed access value; a proxy or CDN that cached it would hand it to the next caller of
the same URL. Every answer under ``/api/`` gets ``Cache-Control: private, no-store``
unless its view set its own. Works in a sync and an async stack alike (the event stream
is an async view).
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control
from django.utils.decorators import sync_and_async_middleware

API_PREFIX = "/api/"


def _private(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if request.path.startswith(API_PREFIX) and not response.has_header("Cache-Control"):
        patch_cache_control(response, private=True, no_store=True)
    return response


@sync_and_async_middleware
def private_api_answers(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            return _private(request, response)

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return _private(request, get_response(request))

    return sync_middleware
