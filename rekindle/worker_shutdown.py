"""A worker told to stop (SIGTERM) finishes what it runs for a grace period, then hands the rest back at once.

Dramatiq's own stop takes no new message (worker threads stop first, prefetched messages
go back to their queues) and waits up to ``--worker-shutdown-timeout`` for running ones; its
``ShutdownNotifications`` middleware would instead raise ``Shutdown`` into every running
actor at the first moment. Neither suits a GPU run of minutes: here running attempts get
``WORKER_SHUTDOWN_GRACE_SECONDS`` to finish. Past it :func:`worker_stopping` turns true, the
heartbeat of every running attempt asks its engine to stop (the prompt is interrupted and
removed on its node), and the runner puts the attempt back in the queue without spending
a try and sends its message again, so another worker takes it now instead of after the
lease. Should a run not come back within ``WORKER_SHUTDOWN_FORCE_SECONDS`` more, ``Shutdown``
is raised in its thread, as ``ShutdownNotifications`` would (it reaches the thread the next
time it runs Python code). ``--worker-shutdown-timeout`` must be longer than both together.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from django.conf import settings
from dramatiq.middleware.shutdown import Shutdown
from dramatiq.middleware.threading import raise_thread_exception

logger = logging.getLogger(__name__)

_stopping = threading.Event()


def worker_stopping() -> bool:
    """Whether this process's worker was told to stop and its grace period is over."""
    return _stopping.is_set()


class GracefulShutdown(dramatiq.Middleware):
    """Lets running messages finish for the grace period, then has them hand their attempts back."""

    def __init__(self) -> None:
        self._running: dict[int, str] = {}
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._running[threading.get_ident()] = message.message_id

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # A new worker in this process (tests start several, one after another) starts with no stop under way.
        self._cancel_timers()
        _stopping.clear()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Every thread of the worker has ended: nothing is left to hand back or to force.
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        grace = float(settings.WORKER_SHUTDOWN_GRACE_SECONDS)
        with self._lock:
            running = len(self._running)
        logger.info("worker.stopping: %d message(s) running get %.0f s to finish", running, grace)
        self._start_timer(grace, self._end_grace)
        self._start_timer(grace + float(settings.WORKER_SHUTDOWN_FORCE_SECONDS), self._force)

    def _start_timer(self, seconds: float, action: Any) -> None:
        timer = threading.Timer(max(seconds, 0.0), action)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def _end_grace(self) -> None:
        with self._lock:
            running = len(self._running)
        if running:
            logger.info("worker.grace_over: handing %d running attempt(s) back to the queue", running)
        _stopping.set()

    def _force(self) -> None:
        with self._lock:
            threads = list(self._running)
        for thread_id in threads:
            logger.warning("worker.forced_stop: raising Shutdown in thread %s", thread_id)
            raise_thread_exception(thread_id, Shutdown)  # type: ignore[no-untyped-call]
