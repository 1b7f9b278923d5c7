"""Serve the pages and the API through ASGI (uvicorn); without Redis, also run the Dramatiq worker in this process.

The embedded mode of ``make run``: one process, SQLite, local files, the local engine. Served as
in production, through ASGI, so the live progress stream of the job page is a coroutine there too
(Django's development server would hold a thread per viewer and buffers async streams).
"""

from __future__ import annotations

from typing import Any

import dramatiq
import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve the pages and the API on 127.0.0.1 (uvicorn); with no REDIS_URL, background work runs in-process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--worker-threads", type=int, default=2)

    def handle(self, *args: Any, host: str, port: int, worker_threads: int, **options: Any) -> None:
        worker = None
        if settings.DRAMATIQ_IN_PROCESS:
            worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=worker_threads)
            worker.start()
            self.stdout.write(f"Background work runs in this process ({worker_threads} threads, no Redis).")
        else:
            self.stdout.write("Background work goes to Redis: start `manage.py rundramatiq` for the workers.")
        self.stdout.write(f"Processing engine: {settings.REKINDLE_ENGINE}")
        self.stdout.write(f"Open http://{host}:{port}/ in a browser (the API is under /api/v1/, staff at /admin/).")
        self.stdout.flush()
        config = uvicorn.Config(
            "rekindle.asgi:application",
            host=host,
            port=port,
            # Django's LOGGING (with the filter that keeps access values out of the access log).
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        try:
            uvicorn.Server(config).run()
        finally:
            if worker is not None:
                worker.stop()
