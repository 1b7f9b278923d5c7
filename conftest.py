"""Fixtures shared by every app's tests.

Each test gets its own MEDIA_ROOT (local file storage never touches ``var/``) and
empty caches (throttle counters do not carry over between tests). S3 fixtures come
from ``rekindle.testing.s3``, ComfyUI stand-ins from ``rekindle.testing.comfyui_fixtures``,
the Redis broker and worker processes of end-to-end tests from ``rekindle.testing.pipeline``;
model factories from ``rekindle.testing.factories``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from django.core.cache import caches
from PIL import Image
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

pytest_plugins = [
    "rekindle.testing.s3",
    "rekindle.testing.comfyui_fixtures",
    "rekindle.testing.pipeline",
    "rekindle.testing.postgres",
    "rekindle.testing.auth0",
    "rekindle.testing.stripe_stub",
]


@pytest.fixture(autouse=True)
def _isolated_media_root(settings: Settings, tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = str(media)
    return media


@pytest.fixture(autouse=True)
def _empty_caches() -> Iterator[None]:
    for cache in caches.all():
        cache.clear()
    yield
    for cache in caches.all():
        cache.clear()


@pytest.fixture
def stub_broker() -> Iterator[Any]:
    """The settings' StubBroker (tests run without REDIS_URL), emptied before and after the test."""
    broker = dramatiq.get_broker()
    _empty(broker)
    yield broker
    _empty(broker)


def _empty(broker: Any) -> None:
    """Drop every message, and every count of one still owed a ``task_done``.

    A stub worker stopped with messages prefetched puts them back on their queue, but the
    ``get`` that took them is never matched by a ``task_done``: the queue would count one
    message too many for good, and every later ``join`` on it would wait forever.
    """
    broker.flush_all()
    for queue in list(broker.queues.values()):
        with queue.all_tasks_done:
            queue.unfinished_tasks = 0
            queue.all_tasks_done.notify_all()


class QueuedMessages:
    """What waits on the stub broker's queues, read without taking it off them."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def messages(self, queue_name: str) -> list[dramatiq.Message[Any]]:
        if queue_name not in self.broker.queues:
            return []
        return [dramatiq.Message.decode(data) for data in list(self.broker.queues[queue_name].queue)]

    def ids(self, queue_name: str) -> list[str]:
        """The first argument (an attempt or job id) of each message, in queue order."""
        return [message.args[0] for message in self.messages(queue_name)]

    def run_here(self, queue_name: str) -> int:
        """Run the queue's messages in this thread (the test's transaction), taking them off; how many ran."""
        ran = 0
        for message in self.messages(queue_name):
            self.broker.get_actor(message.actor_name)(*message.args, **message.kwargs)
            ran += 1
        if ran:
            self.broker.queues[queue_name].queue.clear()
        return ran

    def calls(self, queue_name: str) -> list[tuple[str, str]]:
        """``(actor name, first argument)`` of each message, sorted."""
        return sorted((message.actor_name, message.args[0]) for message in self.messages(queue_name))


@pytest.fixture
def queued(stub_broker: Any) -> QueuedMessages:
    """The messages on the (emptied) stub broker: ``queued.ids("interactive")``, ``queued.calls("paid")``."""
    return QueuedMessages(stub_broker)


@pytest.fixture
def stub_worker_factory(stub_broker: Any) -> Iterator[Callable[..., dramatiq.Worker]]:
    """Starts workers on the stub broker (options as ``dramatiq.Worker``'s); all are stopped after the test."""
    workers: list[dramatiq.Worker] = []

    def start(**options: Any) -> dramatiq.Worker:
        worker = dramatiq.Worker(stub_broker, **{"worker_timeout": 100, **options})
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
        # A stopped worker leaves its middleware on the broker, which would start consumers for
        # queues declared later (a tasks module a later test imports first) that swallow messages.
        stub_broker.middleware[:] = [m for m in stub_broker.middleware if getattr(m, "worker", None) is not worker]


@pytest.fixture
def stub_worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    """A worker on the stub broker; run queued messages with ``stub_broker.join(queue_name)``."""
    return stub_worker_factory()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def jpeg_upload() -> io.BytesIO:
    """A small JPEG photo ready to post as ``image`` (named photo.jpg)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 150, 100)).save(buffer, "JPEG", quality=90)
    buffer.seek(0)
    buffer.name = "photo.jpg"
    return buffer
