"""Sentry: a view's and an actor's exceptions reach a DSN, scrubbed like the logs.

The DSN points at a small HTTP server of the test's on loopback that keeps every envelope
sentry-sdk's own transport posts to it; the web server and the worker are real processes
(``manage.py serve``, ``manage.py rundramatiq``): the web's storage endpoint refuses every request
(403 AccessDenied, a misconfigured bucket: a bug, not an outage) and the worker's refuses connections,
so the upload view and the cleanup actor fail on an error nobody handles.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from jobs.access import job_link_access
from rekindle.sentry import before_breadcrumb, before_send
from rekindle.testing.factories import JobFactory
from rekindle.testing.pipeline import WebProcess, WorkerProcess, free_port, wait_for

EMAIL = "margaret.okafor@example.org"


class Collector(ThreadingHTTPServer):
    """Keeps the decoded body of every envelope posted to it."""

    def __init__(self) -> None:
        self.envelopes: list[str] = []
        super().__init__(("127.0.0.1", free_port()), _Handler)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict[str, Any]]:
        """The error events in the envelopes (each item line that is a JSON object with an exception)."""
        found = []
        for envelope in self.envelopes:
            for line in envelope.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "exception" in item:
                    found.append(item)
        return found


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        self.server.envelopes.append(body.decode(errors="replace"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _DeniedStorage(ThreadingHTTPServer):
    """Answers every request as S3 does for credentials without the right: 403 AccessDenied."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _DeniedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DeniedHandler(BaseHTTPRequestHandler):
    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _deny

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def denied_storage() -> Iterator[_DeniedStorage]:
    server = _DeniedStorage()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sentry_collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_views_and_an_actors_exceptions_reach_sentry_with_no_address_token_or_access_value(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    pipeline_web: Callable[..., WebProcess],
    sentry_collector: Collector,
    denied_storage: _DeniedStorage,
    jpeg_upload: Any,
) -> None:
    dead_storage = f"http://127.0.0.1:{free_port()}"
    env = {"SENTRY_DSN": sentry_collector.dsn, "SENTRY_ENVIRONMENT": "test"}
    pipeline_worker(**env, AWS_S3_ENDPOINT_URL=dead_storage)
    web = pipeline_web(**env, AWS_S3_ENDPOINT_URL=denied_storage.url)
    other = JobFactory.create()
    access = job_link_access(other.id)
    token = other.token  # type: ignore[attr-defined]

    # A client sends secrets wherever Sentry looks: the form, a header, the query string.
    failed = requests.post(
        f"{web.url}/api/v1/jobs/upload?access={access}",
        files={"image": ("photo.jpg", jpeg_upload.getvalue(), "image/jpeg")},
        data={"email": EMAIL},
        headers={"X-Job-Token": token, "X-Job-Access": access, "X-Request-ID": "upload-1"},
        timeout=60,
    )
    assert failed.status_code == 500
    view_event = wait_for(
        lambda: next((e for e in sentry_collector.events() if e.get("tags", {}).get("request_id") == "upload-1"), None),
        what="the view's event",
    )
    assert view_event["environment"] == "test"
    assert view_event["request"]["url"].endswith("/api/v1/jobs/upload")
    assert view_event["exception"]["values"][-1]["type"] == "AccessDenied"

    # Deleting the job through the API queues the removal of its files, which fails in the worker.
    deleted = requests.delete(
        f"{web.url}/api/v1/jobs/{other.id}", headers={"X-Job-Token": token, "X-Request-ID": "delete-1"}, timeout=30
    )
    assert deleted.status_code == 204
    # Dramatiq logs the failure at ERROR inside the message's scope; the logging integration reports it
    # then, and Sentry's dedupe keeps the Dramatiq integration from sending the same exception again.
    actor_event = wait_for(
        lambda: next((e for e in sentry_collector.events() if e.get("contexts", {}).get("dramatiq")), None),
        what="the actor's event",
    )
    assert actor_event["tags"]["request_id"] == "delete-1"
    assert actor_event["contexts"]["dramatiq"]["data"]["args"] == [str(other.id)]
    assert actor_event["exception"]["values"][-1]["type"] == "EndpointConnectionError"
    assert actor_event["transaction"] == "cleanup_job_s3_files"

    everything = "\n".join(sentry_collector.envelopes)
    for what, secret in {"email": EMAIL, "token": token, "access value": access}.items():
        assert secret not in everything, f"the {what} reached Sentry"
    assert "m***@example.org" in everything
    headers = {name.lower(): value for name, value in view_event["request"]["headers"].items()}
    assert (headers["x-job-token"], headers["x-job-access"]) == ("[redacted]", "[redacted]")
    assert view_event["request"]["query_string"] == "access=[redacted]"


def test_before_send_scrubs_every_part_of_an_event_and_tags_the_bound_fields() -> None:
    import structlog
    from sentry_sdk._types import AnnotatedValue

    event = {
        "request": {
            "url": "http://api/j/1",
            "query_string": "access=SIGNEDVALUE&checkout=success",
            "headers": {"X-Job-Token": "TOKENVALUE", "Authorization": "Bearer abc.def.ghi"},
            "data": {"email": EMAIL, "image": AnnotatedValue.removed_because_raw_data()},
        },
        "exception": {"values": [{"type": "ValueError", "value": f"no mailbox {EMAIL}"}]},
        "breadcrumbs": {"values": [{"message": "GET /x?token=TOKENVALUE"}]},
    }
    with structlog.contextvars.bound_contextvars(request_id="r-1", attempt_id="a-1"):
        scrubbed = before_send(event, {})
    text = json.dumps({k: v for k, v in scrubbed.items() if k != "request"}) + json.dumps(
        {k: v for k, v in scrubbed["request"].items() if k != "data"}
    )
    for secret in ("SIGNEDVALUE", "TOKENVALUE", "abc.def.ghi", EMAIL):
        assert secret not in text
        assert secret not in json.dumps(scrubbed["request"]["data"]["email"])
    assert scrubbed["tags"] == {"request_id": "r-1", "attempt_id": "a-1"}
    assert isinstance(scrubbed["request"]["data"]["image"], AnnotatedValue)
    assert before_breadcrumb({"message": f"sent to {EMAIL}"}, {}) == {"message": "sent to m***@example.org"}
