"""ASGI entry point (uvicorn, gunicorn's uvicorn workers, ``manage.py serve``).

Django's ASGI handler gives every request a thread of its own for its synchronous parts (the
middleware, a DRF view), made for the request and ended after it. Two costs follow on every
request: what lives per thread starts again (the database connection, so ``DB_CONN_MAX_AGE``
never saves a connect; the S3 client that presigns URLs, a few hundred milliseconds to build),
and each middleware's request and response halves are a hop between the event loop and that
thread. So here:

- the middleware and the view run as one synchronous chain, one hop per request (every view
  and middleware here is synchronous; an event stream's body is a coroutine either way);
- a request runs in one of ``WEB_REQUEST_THREADS`` long-lived threads of this process, each
  serving one request at a time, so its connection and clients are made once and reused (the
  request's start and end still close a connection that is broken or past its age, in the
  thread that holds it). When all of them are busy (slow uploads) a request gets a thread of
  its own, as Django gives it, and its database connection is closed after it;
- a request for a job's live events (``GET /api/v1/jobs/{id}/events``) runs its short
  synchronous part (sign-in, the access check) in the one thread such requests share, and
  holds no thread while someone watches: the stream itself is a coroutine (``jobs.live``).
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")

# WhiteNoise hands Django file answers with synchronous iterators; Django then reads them in a thread
# a chunk at a time (correct, and small files), warning about it on every static file.
warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous iterators")

EVENT_STREAM_PATH = re.compile(r"^/api/v1/jobs/[^/]+/events$")


class RequestThreads:
    """Long-lived single-thread executors, lent to one request at a time (all from the event loop's thread).

    The last one given back is lent first, so a quiet process keeps using the same warm thread and
    the others' connections age out.
    """

    def __init__(self, size: int) -> None:
        self._idle = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="rekindle-request") for _ in range(size)]

    def take(self) -> ThreadPoolExecutor | None:
        return self._idle.pop() if self._idle else None

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        self._idle.append(executor)

    def close_connections(self) -> None:
        """Close the database connections the idle threads hold (a server in a test stops; the database goes)."""
        for executor in list(self._idle):
            executor.submit(connections.close_all).result()


class RekindleASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.request_threads = RequestThreads(settings.WEB_REQUEST_THREADS)

    def load_middleware(self, is_async: bool = False) -> None:
        # The synchronous chain Django builds for WSGI, entered from the event loop once per request
        # (the same adapter Django puts around a chain that ends in synchronous middleware).
        super().load_middleware(is_async=False)
        chain: Any = self._middleware_chain  # type: ignore[has-type]  # set by Django's load_middleware
        self._middleware_chain = self.adapt_method_mode(True, chain, False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and EVENT_STREAM_PATH.match(scope.get("path", "")):
            # Without a ThreadSensitiveContext, sync_to_async(thread_sensitive=True) uses asgiref's
            # single shared thread, which this request leaves as soon as its view has returned.
            await self.handle(scope, receive, send)
            return
        executor = self.request_threads.take()
        extra = executor is None
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rekindle-request-extra")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if extra:
                # Its connection would otherwise stay open on the server until the garbage collector
                # finds the thread's (Django's own thread per request leaves them so).
                executor.submit(connections.close_all)
                executor.shutdown(wait=False)
            else:
                self.request_threads.give_back(executor)


django.setup(set_prefix=False)
application: Any = RekindleASGIHandler()
if settings.SENTRY_DSN:
    # sentry-sdk wraps Django's ASGIHandler.__call__, which this handler replaces: wrap it here instead,
    # so an event carries its request (URL, headers, query string; scrubbed by rekindle.sentry).
    from sentry_sdk.integrations.asgi import SentryAsgiMiddleware

    application = SentryAsgiMiddleware(application, unsafe_context_data=True)
