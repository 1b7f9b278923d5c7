"""What one log line costs: the formatter every record goes through (structlog, the scrub, JSON or console).

    .venv/bin/python bench/logs.py [--lines 20000]

Formats records the way a web process and a worker emit them, into memory (no disk, no terminal), and
prints the time per line for each, and what the request id middleware adds to a request:

- an access line of uvicorn (a standard library record with arguments) with the request id bound;
- an event of ours with the ten fields a worker binds (``attempt.submitted``);
- botocore's DEBUG dump of a request (a 3 kB line with headers in bytes), the heaviest to scrub;
- a line with a traceback.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")
os.environ.setdefault("DEBUG", "true")


def per_line_us(emit: Callable[[], object], lines: int) -> float:
    """Median of five rounds of ``lines`` calls, in microseconds per call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(lines):
            emit()
        rounds.append((time.perf_counter() - started) / lines * 1e6)
    return statistics.median(rounds)


def measure(fmt: str, lines: int, fields: dict[str, Any], botocore_dump: str, exc_info: Any) -> str:
    """One format's figures, as a line of text."""
    from rekindle.logs import formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    std = logging.getLogger(f"bench.{fmt}")
    std.handlers[:] = [handler]
    std.propagate = False
    std.setLevel(logging.DEBUG)
    events = structlog.stdlib.get_logger(f"bench.{fmt}")

    def access() -> None:
        std.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/api/v1/jobs/db8e7ab3", "1.1", 200)

    def event() -> None:
        events.info("attempt.submitted")

    def dump() -> None:
        std.debug(botocore_dump)

    def traceback() -> None:
        std.error("run failed", exc_info=exc_info)

    with structlog.contextvars.bound_contextvars(request_id=fields["request_id"]):
        access_us = per_line_us(access, lines)
    with structlog.contextvars.bound_contextvars(**fields):
        event_us = per_line_us(event, lines)
        dump_us = per_line_us(dump, max(lines // 10, 1))
        traceback_us = per_line_us(traceback, max(lines // 10, 1))
    return (
        f"{fmt:8s} access line {access_us:7.1f}  attempt event {event_us:7.1f}  "
        f"botocore dump {dump_us:7.1f}  traceback {traceback_us:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()

    import django

    django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory

    from rekindle.logs import configure_structlog
    from rekindle.request_id import request_id_middleware

    configure_structlog()
    fields = {
        "request_id": "8151249dad0e46e78a0d31513a9b66b6",
        "message_id": "8da873b8-4d17-45ef-b51c-5b0ee7e71afe",
        "actor": "process_restoration",
        "job_id": "db8e7ab3-ce3c-4251-b398-425fb242f75b",
        "attempt_id": "d3333e5f-c927-44be-b8bf-bb4fd72cc9df",
        "kind": "restore",
        "tries": 1,
        "engine": "comfyui",
        "node": "http://10.0.0.7:8188",
        "prompt_id": "9a44b39d-48f2-4842-a26b-ba95e453ca37",
    }
    botocore_dump = (
        "Sending http request: <AWSPreparedRequest stream_output=False, method=PUT, "
        "url=http://127.0.0.1:9000/rekindle-media/restored/db8e7ab3-ce3c-4251-b398-425fb242f75b/20261202T043533Z.jpg, "
        "headers={"
        + ", ".join(f"'X-Header-{i}': b'{'v' * 60}'" for i in range(30))
        + ", 'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261202/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=4f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b'}>"
    )
    try:
        raise ValueError("could not reach the node")
    except ValueError as exc:
        exc_info = (type(exc), exc, exc.__traceback__)

    print(f"{args.lines} lines per round, median of 5 rounds, microseconds per line")
    for fmt in ("json", "console"):
        print(measure(fmt, args.lines, fields, botocore_dump, exc_info))

    def view(request: object) -> HttpResponse:
        return HttpResponse("ok")

    middleware = request_id_middleware(view)
    factory = RequestFactory()
    plain = factory.get("/api/v1/jobs/1")
    given = factory.get("/api/v1/jobs/1", HTTP_X_REQUEST_ID="Root=1-67891233-abcdef012345678912345678")
    made_us = per_line_us(lambda: middleware(plain), args.lines)
    given_us = per_line_us(lambda: middleware(given), args.lines)
    bare_us = per_line_us(lambda: view(plain), args.lines)
    print(f"request id middleware: {made_us - bare_us:.1f} us (id made), {given_us - bare_us:.1f} us (id taken)")


if __name__ == "__main__":
    main()
