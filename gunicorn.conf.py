"""gunicorn's settings for the web process (read from the working directory, or ``--config gunicorn.conf.py``).

ASGI through uvicorn's workers, so a job page's live progress stream is a coroutine, not a
worker held per viewer. With ``PROMETHEUS_MULTIPROC_DIR`` every worker writes its metrics to
files there; when one exits, :func:`child_exit` tells prometheus_client, so its live gauges
leave the sums and its counters stay counted. Command-line options override these.
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
worker_class = "uvicorn_worker.UvicornWorker"
timeout = 60
accesslog = "-"


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
