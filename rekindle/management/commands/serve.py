"""Serve the API; without Redis, also run the Dramatiq worker in this process (the embedded mode)."""

from __future__ import annotations

from typing import Any

import dramatiq
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve the API on 127.0.0.1; with no REDIS_URL, background work runs in-process."

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
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            if worker is not None:
                worker.stop()
