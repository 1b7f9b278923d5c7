"""The graceful stop's grace and force timers belong to the worker that is stopping, and end with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
from pytest_django.fixtures import Settings

from rekindle.worker_shutdown import GracefulShutdown, worker_stopping


def _middleware(broker: Any) -> GracefulShutdown:
    return next(m for m in broker.middleware if isinstance(m, GracefulShutdown))


def test_a_stopped_workers_timers_never_reach_the_next_worker(
    stub_worker_factory: Callable[..., dramatiq.Worker], stub_broker: Any, settings: Settings
) -> None:
    settings.WORKER_SHUTDOWN_GRACE_SECONDS = 0.2
    settings.WORKER_SHUTDOWN_FORCE_SECONDS = 0.2
    first = stub_worker_factory(worker_threads=1)
    first.stop()
    assert _middleware(stub_broker)._timers == []  # its threads are gone: nothing left to hand back or force

    stub_worker_factory(worker_threads=1)
    time.sleep(0.6)  # past both of the first stop's deadlines
    assert not worker_stopping()


def test_a_stop_under_way_ends_the_grace_for_this_worker(
    stub_worker_factory: Callable[..., dramatiq.Worker], stub_broker: Any, settings: Settings
) -> None:
    settings.WORKER_SHUTDOWN_GRACE_SECONDS = 0.0
    settings.WORKER_SHUTDOWN_FORCE_SECONDS = 60
    worker = stub_worker_factory(worker_threads=1)
    middleware = _middleware(stub_broker)
    middleware.before_worker_shutdown(stub_broker, worker)
    deadline = time.monotonic() + 10
    while not worker_stopping() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_stopping()
    worker.stop()
    assert not middleware._timers
    stub_worker_factory(worker_threads=1)  # a new worker starts with no stop under way
    assert not worker_stopping()
