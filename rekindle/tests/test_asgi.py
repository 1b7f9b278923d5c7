"""The ASGI handler: requests run in long-lived threads that keep their database connection, and an extra
thread (every long-lived one busy) leaves no connection open behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn
from django.db import connection

from rekindle.asgi import RekindleASGIHandler, RequestThreads, application
from rekindle.testing.factories import JobFactory, token_of
from rekindle.testing.pipeline import free_port

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's pg_stat_activity")

WAIT = 20.0


def _serve(app: RekindleASGIHandler) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.request_threads.close_connections()


@pytest.fixture
def served(transactional_db: None) -> Iterator[str]:
    yield from _serve(application)


@pytest.fixture
def served_without_threads(transactional_db: None) -> Iterator[str]:
    app = RekindleASGIHandler()
    app.request_threads = RequestThreads(0)
    yield from _serve(app)


def _other_backends() -> set[int]:
    """The server processes of the other connections to this test's database (the server's requests')."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {row[0] for row in cursor.fetchall()}


def _read_job(url: str) -> None:
    job = JobFactory.create()
    response = requests.get(f"{url}/api/v1/jobs/{job.pk}", headers={"X-Job-Token": token_of(job)}, timeout=WAIT)
    assert response.status_code == 200, response.text


def test_it_serves_requests_one_after_another_on_one_database_connection(served: str) -> None:
    before = _other_backends()  # left open by earlier tests' servers (the event streams' shared thread)
    seen = []
    for _ in range(5):
        _read_job(served)
        seen.append(_other_backends() - before)
    assert len(seen[0]) == 1
    assert all(backends == seen[0] for backends in seen)


def test_it_closes_the_connection_of_a_request_that_had_a_thread_of_its_own(served_without_threads: str) -> None:
    before = _other_backends()
    for _ in range(3):
        _read_job(served_without_threads)
    deadline = time.monotonic() + WAIT
    while _other_backends() - before and time.monotonic() < deadline:
        time.sleep(0.05)  # the extra thread closes it just after the answer is sent
    assert _other_backends() - before == set()
