"""The scrub every log line (and every Sentry event) goes through: what it takes out, and what it leaves."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re

import pytest

from rekindle.log_redaction import RedactSecrets, mask_email, redact, scrub_event, scrub_value
from rekindle.logs import formatter

PRESIGNED = (
    "http://127.0.0.1:9000/rekindle-media/restored/5b1c/20261202T043533Z-2e05.jpg"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261202%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261202T043533Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLETOKEN"
    "&X-Amz-Signature=4f0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
)
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhdXRoMHwxMjMifQ.c2lnbmF0dXJlLXZhbHVlLWhlcmU"


def test_it_masks_email_addresses_to_their_first_letter_and_domain() -> None:
    assert mask_email("family@example.com") == "f***@example.com"
    line = redact("sent to Margaret.Okafor+photos@mail.example.org and bob@x.io")
    assert line == "sent to M***@mail.example.org and b***@x.io"
    assert redact(line) == line


def test_it_removes_every_part_of_a_presigned_url_that_grants_access() -> None:
    line = redact(f"GET {PRESIGNED}")
    for secret in ("4f0b1c2d3e4f", "AKIAEXAMPLE", "FwoGZXIvYXdzEXAMPLETOKEN"):
        assert secret not in line
    assert "X-Amz-Signature=[redacted]" in line
    assert "X-Amz-Expires=900" in line
    assert "/restored/5b1c/20261202T043533Z-2e05.jpg" in line
    # SigV2 and the signature botocore prints at DEBUG when it signs.
    assert redact("?AWSAccessKeyId=AKIA1&Signature=abc%2Bdef&Expires=1") == (
        "?AWSAccessKeyId=[redacted]&Signature=[redacted]&Expires=1"
    )
    assert redact("Signature:\n4f0b1c2d3e4f5a6b") == "Signature:\n[redacted]"
    assert "SIGVALUE" not in redact("Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=SIGVALUE")


def test_it_removes_job_tokens_access_values_and_bearers() -> None:
    assert redact("GET /j/abc?access=SECRET&checkout=success") == "GET /j/abc?access=[redacted]&checkout=success"
    assert redact("/api/v1/jobs/1?token=T0KEN") == "/api/v1/jobs/1?token=[redacted]"
    assert redact(f"Authorization: Bearer {JWT}") == "Authorization: Bearer [redacted]"
    assert JWT not in redact(f"token was {JWT}")


def test_it_replaces_image_bytes_printed_or_in_base64_and_keeps_ids_and_paths() -> None:
    photo = os.urandom(300)
    assert redact(f"body={photo!r}").startswith("body=[bytes ")
    encoded = base64.b64encode(photo).decode()
    assert redact(f"image {encoded}") == f"image [base64 {len(encoded)} chars]"
    path = "restored/9dc599a0-17ef-42c5-b398-c6804654344b/20261202T043533197838Z-2e05/9dc599a0-17ef-42c5-b398.jpg"
    assert redact(path) == path
    digest = "3fdf18f5ddb500ee303f7dfc9a6aa4a1e48c625973d77e12386502415847860b"
    assert redact(digest) == digest
    assert scrub_value(photo) == "[300 bytes]"


def test_it_scrubs_every_field_of_an_event_and_secrets_by_key() -> None:
    class Request:
        def __str__(self) -> str:
            return "<ASGIRequest: GET '/j/1?access=SECRET'>"

    event = scrub_event(
        None,
        "info",
        {
            "event": "email.sent",
            "to": "family@example.com",
            "headers": {"X-Job-Token": "plain-token-value", "Accept": "application/json"},
            "image": b"\xff\xd8\xff\xe0",
            "items": [f"{PRESIGNED}", 3, None],
            "request": Request(),
        },
    )
    assert event == {
        "event": "email.sent",
        "to": "f***@example.com",
        "headers": {"X-Job-Token": "[redacted]", "Accept": "application/json"},
        "image": "[4 bytes]",
        "items": [redact(PRESIGNED), 3, None],
        "request": "<ASGIRequest: GET '/j/1?access=[redacted]'>",
    }


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_it_scrubs_a_standard_library_record_and_its_traceback_in_either_format(fmt: str) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    logger = logging.getLogger(f"rekindle.tests.scrub.{fmt}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("could not mail family@example.com")
        except ValueError:
            logger.exception("GET %s failed for %s", "/j/1?access=SECRET", b"\x89PNG" * 30)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "family@example.com" not in text
    assert "SECRET" not in text
    assert "PNG" not in text
    assert "f***@example.com" in text
    assert "ValueError" in text
    if fmt == "json":
        line = json.loads(text)
        assert line["level"] == "error"
        # The record's arguments are printed into its message first; the printed bytes are then replaced.
        assert re.fullmatch(r"GET /j/1\?access=\[redacted\] failed for \[bytes \d+ chars\]", line["event"])
        assert "Traceback" in line["exception"]


def test_the_access_loggers_filter_applies_the_same_rules() -> None:
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, "%s %s", ("GET", f"{PRESIGNED}&u=family@example.com"), None
    )
    RedactSecrets().filter(record)
    line = record.getMessage()
    assert "4f0b1c2d3e4f" not in line
    assert "family@example.com" not in line
