"""gunicorn's settings for the web process (read from the working directory, or ``--config gunicorn.conf.py``).

ASGI through uvicorn's workers, so a job page's live progress stream is a coroutine, not a
worker held per viewer. gunicorn's own process (the arbiter: workers booting, exiting, timing
out) logs like the app: ``logconfig_dict`` gives it the app's logging setup (``rekindle.logs``:
JSON or console, scrubbed), read from the same variables, before Django is loaded; each worker
then applies the same again from the settings. With ``PROMETHEUS_MULTIPROC_DIR`` every worker
writes its metrics to files there; when one exits, :func:`child_exit` tells prometheus_client,
so its live gauges leave the sums and its counters stay counted. Command-line options
(``--workers``, ``--bind``, ...) override these.
"""

from __future__ import annotations

import os
from typing import Any

from rekindle.logs import default_format, logging_config

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
worker_class = "uvicorn_worker.UvicornWorker"
timeout = 60
# On SIGTERM: stop accepting, give requests in flight this long to finish.
graceful_timeout = 30
accesslog = "-"

_debug = os.environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
logconfig_dict = logging_config(
    fmt=os.environ.get("LOG_FORMAT", "").strip().lower() or default_format(_debug),
    level=os.environ.get("LOG_LEVEL", "").strip() or "INFO",
)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
