"""The production web server's lines: gunicorn with uvicorn workers, as the image runs it, logs JSON only, scrubbed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from rekindle.testing.pipeline import REPO_ROOT, free_port, wait_for


def test_gunicorn_and_its_uvicorn_workers_write_one_scrubbed_json_line_per_event(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DJANGO_"))},
        "DEBUG": "false",
        "SECRET_KEY": "a-test-secret-key-that-is-long-enough-for-django-checks-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REKINDLE_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("REDIS_URL", None)
    env.pop("LOG_FORMAT", None)
    # The image's command (Dockerfile), on a port of the test's own.
    command = [
        sys.executable, "-m", "gunicorn", "rekindle.asgi:application",
        "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--access-logfile", "-",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def answers() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/schema/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(answers, timeout=60, what="gunicorn")
        response = requests.get(
            f"http://127.0.0.1:{port}/api/schema/?access=SECRETVALUE&who=family@example.com",
            headers={"X-Request-ID": "gunicorn-1"},
            timeout=10,
        )
        assert response.headers["X-Request-ID"] == "gunicorn-1"
        wait_for(lambda: "gunicorn-1" in log_path.read_text(), timeout=30, what="the access line")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "uvicorn.access"} <= loggers
    access = [line for line in lines if line.get("request_id") == "gunicorn-1" and line["logger"] == "uvicorn.access"]
    assert len(access) == 1
    assert "access=[redacted]" in access[0]["event"]
    assert "SECRETVALUE" not in text
    assert "family@example.com" not in text
