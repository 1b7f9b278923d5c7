"""ASGI entry point (uvicorn, gunicorn's uvicorn workers, ``manage.py serve``).

Django's ASGI handler gives every request a thread of its own for its synchronous parts (the
middleware, a DRF view), alive until the answer is sent. For an event stream that is the
whole time someone watches a job page: one idle thread per viewer. So a request for a job's
live events (``GET /api/v1/jobs/{id}/events``) runs its short synchronous part (sign-in, the
access check) in the one thread such requests share instead; the stream itself is a coroutine
(``jobs.live``), and no thread waits on a viewer.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")

# WhiteNoise hands Django file answers with synchronous iterators; Django then reads them in a thread
# a chunk at a time (correct, and small files), warning about it on every static file.
warnings.filterwarnings("ignore", "StreamingHttpResponse must consume synchronous iterators")

EVENT_STREAM_PATH = re.compile(r"^/api/v1/jobs/[^/]+/events$")


class RekindleASGIHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and EVENT_STREAM_PATH.match(scope.get("path", "")):
            # Without a ThreadSensitiveContext, sync_to_async(thread_sensitive=True) uses asgiref's
            # single shared thread, which this request leaves as soon as its view has returned.
            await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


django.setup(set_prefix=False)
application = RekindleASGIHandler()
