"""The database restarted or stopped under a running service: 503s while it is away, nothing lost or spent.

Each test runs its own PostgreSQL (``own_postgres``: initdb and pg_ctl on a free port, never
the machine's shared server) behind a real web server process (``manage.py serve``) and,
for the worker, a real ``rundramatiq`` process, and stops and starts it under them.
"""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.conf import settings
from PIL import Image

from jobs.customer_errors import REQUEST_ERROR_WORDS
from rekindle.testing.pipeline import WorkerProcess, wait_for
from rekindle.testing.postgres import PostgresServer
from rekindle.testing.services import REDIS_URL
from rekindle.testing.site import EmbeddedSite
from restoration.tasks import process_restoration

pytestmark = [pytest.mark.redis]


def _photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 72), (120, 90, 60)).save(buffer, "JPEG")
    return buffer.getvalue()


def _site(folder: Path, server: PostgresServer, *, wsgi: bool = False, **env: str) -> EmbeddedSite:
    return EmbeddedSite(
        folder,
        wsgi=wsgi,
        DATABASE_URL=server.create_database("rekindle"),
        DEBUG="false",
        DB_CONN_MAX_AGE="600",
        **env,
    ).start(timeout=120)


def _assert_database_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text[:500]
    assert int(response.headers["Retry-After"]) >= 1
    if response.headers["Content-Type"].startswith("application/json"):
        error = response.json()["error"]
        assert error["code"] == "database_unavailable"
        assert error["message"] == REQUEST_ERROR_WORDS["database_unavailable"]
        assert "Operational" not in error["message"]
        assert "127.0.0.1" not in error["message"]


def test_it_answers_503_while_the_database_is_away_and_reconnects_after_a_restart(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    # gunicorn's sync worker keeps one connection from request to request (under ASGI each request has its own).
    site = _site(tmp_path / "site", own_postgres, wsgi=True)
    try:
        job = site.upload(_photo(), restore=False)
        headers = {"X-Job-Token": job["token"]}
        detail = f"{site.url}/api/v1/jobs/{job['id']}"
        assert requests.get(detail, headers=headers, timeout=10).status_code == 200  # a kept connection now

        # A restart with no request in between: the kept connection is dead, the next request must not see it.
        own_postgres.stop("fast")
        own_postgres.start()
        assert requests.get(detail, headers=headers, timeout=10).status_code == 200

        own_postgres.stop("fast")
        upload = requests.post(
            f"{site.url}/api/v1/jobs/upload",
            files={"image": ("photo.jpg", _photo(), "image/jpeg")},
            data={"email": "family@example.com"},
            timeout=30,
        )
        _assert_database_unavailable(upload)
        _assert_database_unavailable(requests.get(detail, headers=headers, timeout=10))
        _assert_database_unavailable(requests.delete(detail, headers=headers, timeout=10))
        # A view outside the API that reads the database (the staff console, a session to look up).
        page = requests.get(
            f"{site.url}/admin/", headers={"Accept": "text/html"}, cookies={"sessionid": "x" * 32}, timeout=10
        )
        _assert_database_unavailable(page)
        assert "try again" in page.text
        assert page.headers["Content-Type"].startswith("text/html")

        own_postgres.start()
        assert requests.get(detail, headers=headers, timeout=10).status_code == 200
        assert " 500 " not in re.sub(r"\s+", " ", site.log())
    finally:
        site.stop()


def _worker_env(site: EmbeddedSite, namespace: str, tmp_path: Path) -> dict[str, str]:
    emails = tmp_path / "worker-emails"
    emails.mkdir()
    return {
        **site.env,
        "PYTHONPATH": str(settings.BASE_DIR),
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        "REDIS_URL": REDIS_URL,
        "DRAMATIQ_REDIS_NAMESPACE": namespace,
        "FLEET_NAMESPACE": namespace,
        "EMAIL_FILE_PATH": str(emails),
        # One try and a short backoff: Dramatiq's own retries would dead-letter the message at its second error.
        "MAX_TRIES": "1",
        "RETRY_MIN_BACKOFF_MS": "100",
        "RETRY_MAX_BACKOFF_MS": "200",
    }


def test_it_waits_out_a_database_stop_without_spending_tries_or_dead_lettering(
    own_postgres: PostgresServer, tmp_path: Path, redis_broker: Any, redis_namespace: str
) -> None:
    # The site sends its own messages where no worker listens: the test sends the one the worker gets.
    unheard = f"unheard-{uuid.uuid4().hex[:8]}"
    site = _site(tmp_path / "site", own_postgres, REDIS_URL=REDIS_URL, DRAMATIQ_REDIS_NAMESPACE=unheard)
    worker = WorkerProcess(_worker_env(site, redis_namespace, tmp_path), threads=2)
    try:
        job = site.upload(_photo(), restore=True)
        headers = {"X-Job-Token": job["token"]}
        detail = f"{site.url}/api/v1/jobs/{job['id']}"
        attempt_id = requests.get(detail, headers=headers, timeout=10).json()["restore_attempts"][0]["id"]
        worker.start()

        own_postgres.stop("fast")
        process_restoration.send(attempt_id)
        wait_for(lambda: worker.log().count("message.database_wait") >= 3, timeout=120, what="three database waits")
        client = redis.Redis.from_url(REDIS_URL)
        dead = client.zcard(f"{redis_namespace}:{settings.DRAMATIQ_QUEUE_INTERACTIVE}.XQ")
        assert dead == 0, worker.log()[-3000:]

        own_postgres.start()

        def finished() -> dict[str, Any] | None:
            response = requests.get(detail, headers=headers, timeout=10)
            attempt: dict[str, Any] = response.json()["restore_attempts"][0] if response.status_code == 200 else {}
            return attempt if attempt.get("status") in ("succeeded", "failed") else None

        attempt = wait_for(finished, timeout=180, what="the restore after the database came back")
        assert attempt["status"] == "succeeded", attempt
        assert attempt["tries"] == 1
        assert client.zcard(f"{redis_namespace}:{settings.DRAMATIQ_QUEUE_INTERACTIVE}.XQ") == 0
    finally:
        worker.stop()
        site.stop()
