"""/metrics across processes: a restore through gunicorn's web workers and a real rundramatiq worker.

The web server (gunicorn, two uvicorn workers, ``gunicorn.conf.py``) and the worker share one
``PROMETHEUS_MULTIPROC_DIR``; the restore is asked for over HTTP and runs on a ComfyUI stand-in,
with the bucket on moto. A scrape of the web's ``/metrics`` must then show what the web wrote
(the attempt queued, the HTTP requests) and what only the worker can have written (the claim,
the success, the timings, Dramatiq's own counters). Access is by token or address only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from rekindle.testing.pipeline import REPO_ROOT, WebServer, WorkerProcess, free_port, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-test-token-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: ``(name, labels) -> value``."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in scraped.items() if n == name and wanted <= got)


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    return folder


@pytest.fixture
def web_server(worker_env: dict[str, str], multiproc_dir: Path) -> Iterator[Callable[..., WebServer]]:
    started: list[WebServer] = []

    def start(**overrides: str) -> WebServer:
        env = {
            **worker_env,
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
            "METRICS_TOKEN": TOKEN,
            # Loopback is not let in: the test's own requests come from "another address".
            "METRICS_ALLOWED_IPS": "192.0.2.0/24",
            "NUM_PROXIES": "1",
            **{f"THROTTLE_{scope}_{kind}RATE": "off" for scope in ("UPLOAD", "RESTORE") for kind in ("", "IP_")},
            **overrides,
        }
        server = WebServer(env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_it_shows_a_restore_from_the_web_and_the_worker_processes(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    web_server: Callable[..., WebServer],
    multiproc_dir: Path,
    jpeg_upload: Any,
) -> None:
    exposition_port = free_port()
    pipeline_worker(
        PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
        DRAMATIQ_METRICS_PORT=str(exposition_port),
        # Another loopback address than 127.0.0.1: reachable there only if it binds where it is told.
        DRAMATIQ_METRICS_HOST="127.0.0.2",
    )
    web = web_server()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = requests.get(web.url + "/metrics", headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        return samples(response.text)

    before = scrape()
    assert value(before, "rekindle_attempt_transitions_total", kind="restore", status="succeeded") == 0

    uploaded = requests.post(
        web.url + "/api/v1/jobs/upload",
        files={"image": ("photo.jpg", jpeg_upload.read(), "image/jpeg")},
        data={"email": "family@example.com", "restore": "true"},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    job_url = f"{web.url}/api/v1/jobs/{body['id']}"

    def restored() -> dict[str, Any] | None:
        attempt: dict[str, Any] = requests.get(job_url, headers={"X-Job-Token": body["token"]}, timeout=10).json()[
            "restore_attempts"
        ][0]
        return attempt if attempt["status"] in ("succeeded", "failed") else None

    assert wait_for(restored, what="the restore")["status"] == "succeeded"

    # The success is counted after the worker's commit: wait for it rather than race it.
    after = wait_for(
        lambda: (
            (s := scrape())
            and value(s, "rekindle_attempt_transitions_total", kind="restore", status="succeeded") >= 1
            and s
        ),
        what="the worker's counts",
    )
    transitions = "rekindle_attempt_transitions_total"
    assert value(after, transitions, kind="restore", status="queued") >= 1  # the web process's
    assert value(after, transitions, kind="restore", status="running") >= 1  # the worker's claim
    for histogram in ("rekindle_attempt_queue_wait_seconds", "rekindle_attempt_total_seconds"):
        assert value(after, histogram + "_count", kind="restore") == 1, histogram
    assert value(after, "rekindle_attempt_execution_seconds_count", kind="restore", outcome="succeeded") == 1
    assert value(after, "rekindle_attempt_total_seconds_sum", kind="restore") > 0
    # GPU seconds of the stand-in node, counted by the worker's pool.
    assert value(after, "rekindle_comfyui_node_gpu_seconds_total") > 0
    # Dramatiq's own middleware, in the worker, writes to the same folder.
    assert value(after, "dramatiq_messages_total", actor_name="process_restoration") >= 1
    # django-prometheus, in the web workers.
    assert value(after, "django_http_requests_total_by_method_total", method="POST") >= 1
    assert value(after, "rekindle_attempts_in_flight", kind="restore", status="queued") == 0

    # The workers' exposition server answers where it was told to, and only there.
    exposed = requests.get(f"http://127.0.0.2:{exposition_port}/metrics", timeout=10)
    assert exposed.status_code == 200
    assert value(samples(exposed.text), "rekindle_attempt_transitions_total", status="succeeded") >= 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{exposition_port}/metrics", timeout=5)

    # The dashboard's Dramatiq panels chart what the worker's middleware really exports.
    from tests.test_deploy import dashboard_metric_names, exported_names

    charted = {name for name in dashboard_metric_names() if name.startswith("dramatiq_")}
    scraped = exported_names(exposed.text)
    assert charted & scraped
    # A labelled family with no sample yet (no message has failed) is left out of a multiprocess scrape:
    # those are checked against what the middleware declares.
    import dramatiq.middleware.prometheus as dramatiq_prometheus

    declared = set(re.findall(r'"(dramatiq_[a-z_]+)"', Path(dramatiq_prometheus.__file__).read_text()))
    assert charted <= scraped | declared


def test_it_refuses_the_metrics_without_the_token_or_from_another_address(
    web_server: Callable[..., WebServer],
) -> None:
    web = web_server()
    url = web.url + "/metrics"

    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 401
    assert "rekindle_" not in wrong.text
    # Behind NUM_PROXIES=1 the address is the proxy's X-Forwarded-For entry, as for the throttles.
    outside = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert outside.status_code == 401
    inside = requests.get(url, headers={"X-Forwarded-For": "192.0.2.7"}, timeout=10)
    assert inside.status_code == 200
    assert "rekindle_attempts_in_flight" in inside.text

    # Without a token only the allowed networks get in, and the others are told so with a 403.
    closed = web_server(METRICS_TOKEN="")
    refused = requests.get(closed.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_it_binds_the_workers_exposition_server_to_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    """Dramatiq's own default is every interface (0.0.0.0), even when its variable says so by accident."""
    program = (
        "import django; django.setup(); "
        "from django.conf import settings; import dramatiq.middleware.prometheus as p; "
        "names = [m.__class__.__name__ for m in __import__('dramatiq').get_broker().middleware]; "
        "print(p.HTTP_HOST, p.HTTP_PORT, p.DB_PATH, 'Prometheus' in names)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        "DEBUG": "true",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "dramatiq_prom_host": "0.0.0.0",  # noqa: S104  (what must not win)
    }
    shown = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == ["127.0.0.1", "9191", str(tmp_path / "prom"), "True"]
