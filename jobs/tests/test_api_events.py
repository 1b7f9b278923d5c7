"""GET /api/v1/jobs/{id}/events: the live progress of a job, as Server-Sent Events, over a real ASGI server.

The server is uvicorn in a thread of the test process, on the test database (committed rows:
transactional tests); the changes are made by the lifecycle's own functions, as a worker makes them.
Without Redis the stream reads the database; with it, the changes come through Redis pub/sub (the
database is then read only every LIVE_RESYNC_SECONDS, set far beyond the test's waits).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from pytest_django.fixtures import Settings

from jobs.attempts import attempt_claim, attempt_fail, attempt_renew_lease, attempt_succeed
from jobs.models import Job
from jobs.services import job_delete
from rekindle.asgi import application
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, token_of
from rekindle.testing.pipeline import free_port
from rekindle.testing.services import REDIS_URL
from restoration.models import RestoreAttempt
from restoration.services import restore_select

WAIT = 10.0  # seconds an expected event may take at most before the test fails (not a timing assertion)


@pytest.fixture
def asgi_url(transactional_db: None, settings: Settings) -> Iterator[str]:
    settings.LIVE_POLL_SECONDS = 0.05
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config("rekindle.asgi:application", host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    application.request_threads.close_connections()


@pytest.fixture
def through_redis(settings: Settings) -> str:
    """The changes go through the machine's Redis, under a namespace of this test's own."""
    settings.REDIS_URL = REDIS_URL
    settings.DRAMATIQ_REDIS_NAMESPACE = f"rekindle-test-{uuid.uuid4().hex[:8]}"
    settings.LIVE_RESYNC_SECONDS = 600.0
    return REDIS_URL


class Stream:
    """The events of one open stream, read by a thread of its own."""

    def __init__(self, url: str, job: Job, **headers: str) -> None:
        self.response = requests.get(
            f"{url}/api/v1/jobs/{job.pk}/events",
            headers={"Accept": "text/event-stream", "X-Job-Token": token_of(job), **headers},
            stream=True,
            timeout=WAIT,
        )
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        name = ""
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.put((name, json.loads(line.removeprefix("data: "))))
        except requests.RequestException:
            pass
        finally:
            self.closed.set()

    def next(self) -> tuple[str, Any]:
        return self.events.get(timeout=WAIT)

    def attempt(self) -> dict[str, Any]:
        """The next attempt event (job events in between are skipped)."""
        while True:
            name, data = self.next()
            if name == "attempt":
                return dict(data)
            assert name == "job", (name, data)

    def close(self) -> None:
        self.response.close()


def _follow_one_restore(url: str) -> None:
    job = JobFactory.create()
    attempt = RestoreAttemptFactory.create(job=job)
    stream = Stream(url, job)
    assert stream.response.status_code == 200
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert "no-cache" in stream.response.headers["Cache-Control"]

    assert stream.next() == ("job", {"id": str(job.pk), "selected_restore": None, "latest_animation": None})
    first = stream.attempt()
    assert (first["kind"], first["id"], first["status"], first["progress"]) == ("restore", str(attempt.pk), "queued", 0)

    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None
    assert stream.attempt()["status"] == "running"
    attempt_renew_lease(claimed, progress=40)
    assert (lambda e: (e["status"], e["progress"]))(stream.attempt()) == ("running", 40)

    def select_it() -> None:
        Job.objects.filter(pk=job.pk).update(selected_restore=claimed.pk)

    attempt_succeed(claimed, values={"result_key": "restored/x.jpg"}, on_success=select_it)
    events = [stream.next() for _ in range(3)]
    assert ("job", {"id": str(job.pk), "selected_restore": str(attempt.pk), "latest_animation": None}) in events
    done = next(data for name, data in events if name == "attempt")
    assert (done["status"], done["progress"], done["error"]) == ("succeeded", 100, None)
    assert events[-1] == ("end", {"reason": "settled"})
    assert stream.closed.wait(WAIT), "the stream ends once nothing is in flight"


def test_it_sends_each_transition_from_the_database_and_ends_when_all_are_settled(asgi_url: str) -> None:
    _follow_one_restore(asgi_url)


@pytest.mark.redis
def test_it_sends_each_transition_through_redis(asgi_url: str, through_redis: str) -> None:
    _follow_one_restore(asgi_url)


def test_it_says_what_went_wrong_in_the_customers_words(asgi_url: str) -> None:
    job = JobFactory.create()
    attempt = RestoreAttemptFactory.create(job=job)
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None
    stream = Stream(asgi_url, job)
    assert stream.attempt()["status"] == "running"
    attempt_fail(claimed, error_type="execution_failed", message="KSampler exploded on gpu-node-7:8188")
    failed = stream.attempt()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "processing_failed"
    assert "gpu-node" not in json.dumps(failed)
    assert stream.next() == ("end", {"reason": "settled"})


@pytest.mark.redis
def test_it_announces_the_selected_restore_and_a_deleted_job(asgi_url: str, through_redis: str) -> None:
    job = JobFactory.create()
    done = RestoreAttemptFactory.create(job=job, succeeded=True)
    RestoreAttemptFactory.create(job=job)  # in flight: the stream stays open
    stream = Stream(asgi_url, job)
    assert stream.next()[0] == "job"
    stream.attempt()
    stream.attempt()
    restore_select(job=job, restore_id=done.pk)
    assert stream.next() == ("job", {"id": str(job.pk), "selected_restore": str(done.pk), "latest_animation": None})
    job_delete(job=job)
    assert stream.next() == ("end", {"reason": "deleted"})
    assert stream.closed.wait(WAIT)


def test_it_ends_at_once_when_nothing_is_in_flight(asgi_url: str) -> None:
    job = JobFactory.create()
    RestoreAttemptFactory.create(job=job, succeeded=True)
    stream = Stream(asgi_url, job)
    names = [stream.next()[0] for _ in range(3)]
    assert names == ["job", "attempt", "end"]
    assert stream.closed.wait(WAIT)


def test_it_answers_a_caller_without_access_with_the_apis_json_404(asgi_url: str) -> None:
    job = JobFactory.create()
    RestoreAttemptFactory.create(job=job)
    for headers in ({"X-Job-Token": "not-the-token"}, {}):
        response = requests.get(
            f"{asgi_url}/api/v1/jobs/{job.pk}/events", headers={"Accept": "text/event-stream", **headers}, timeout=WAIT
        )
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_found"


def test_it_holds_no_thread_per_viewer(asgi_url: str) -> None:
    job = JobFactory.create()
    RestoreAttemptFactory.create(job=job)  # in flight: every stream stays open
    request = (
        f"GET /api/v1/jobs/{job.pk}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"X-Job-Token: {token_of(job)}\r\n\r\n"
    ).encode()
    host, port = asgi_url.removeprefix("http://").split(":")
    viewers: list[socket.socket] = []
    try:
        for _ in range(5):  # the first streams start the pools they share
            viewers.append(_open_viewer(host, int(port), request))
        threads_before = threading.active_count()
        for _ in range(40):
            viewers.append(_open_viewer(host, int(port), request))
        assert threading.active_count() - threads_before < 5
    finally:
        for viewer in viewers:
            viewer.close()


def _open_viewer(host: str, port: int, request: bytes) -> socket.socket:
    """A viewer that has read its stream's first event (so the server is serving it)."""
    viewer = socket.create_connection((host, port), timeout=WAIT)
    viewer.sendall(request)
    received = b""
    while b"event: attempt" not in received:
        chunk = viewer.recv(4096)
        assert chunk, "the stream closed"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    return viewer
