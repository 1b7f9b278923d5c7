"""Structured logs across the real parts: a uvicorn web server and a rundramatiq worker, their output captured.

The web server (``manage.py serve``) and the worker (``manage.py rundramatiq``) run as processes
of their own on pytest's PostgreSQL database, a Redis namespace of this test's, moto's S3 and
ComfyUI stand-ins; every line either writes goes to a file the test reads.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests

from rekindle.testing.pipeline import WebProcess, WorkerProcess, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
SMALL_ANIMATION = {"seconds": 1, "fps": 8, "width": 256, "height": 256}


def json_lines(text: str) -> list[dict[str, Any]]:
    """The log lines of a process that are JSON objects (everything a process logs; a few prints are not)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def finished(web: WebProcess, job_id: str, token: str, kind: str = "restore_attempts") -> dict[str, Any] | None:
    answer = requests.get(f"{web.url}/api/v1/jobs/{job_id}", headers={"X-Job-Token": token}, timeout=10).json()
    attempts = answer[kind]
    if attempts and attempts[0]["status"] in ("succeeded", "failed"):
        return dict(answer)
    return None


def test_it_logs_one_request_id_and_attempt_id_on_both_sides_of_the_broker_for_restores_and_animations(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    pipeline_web: Callable[..., WebProcess],
    jpeg_upload: Any,
) -> None:
    worker = pipeline_worker(LOG_FORMAT="json")
    web = pipeline_web(LOG_FORMAT="json")

    uploaded = requests.post(
        f"{web.url}/api/v1/jobs/upload",
        files={"image": ("photo.jpg", jpeg_upload.getvalue(), "image/jpeg")},
        data={"email": "family@example.com"},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    job_id, token = uploaded.json()["id"], uploaded.json()["token"]
    request_id = "restore-7f3a9c"
    restored = requests.post(
        f"{web.url}/api/v1/jobs/{job_id}/restore",
        json={"parameters": SMALL_RESTORE},
        headers={"X-Job-Token": token, "X-Request-ID": request_id},
        timeout=30,
    )
    assert restored.status_code == 202, restored.text
    assert restored.headers["X-Request-ID"] == request_id
    attempt_id = restored.json()["id"]
    answer = wait_for(lambda: finished(web, job_id, token), what="the restore")
    assert answer["restore_attempts"][0]["status"] == "succeeded"
    wait_for(lambda: '"attempt.finished"' in worker.log(), what="the worker's last line of the run")
    # The ready email is sent by its own actor after the run's commit, so it may come after that line.
    wait_for(lambda: '"email.sent"' in worker.log(), what="the ready email's line")

    web_lines = json_lines(web.log())
    worker_lines = json_lines(worker.log())
    # The web side: the request's own lines (the attempt sent, the access line) under the id it was given.
    sent = [line for line in web_lines if line["event"] == "attempt.sent"]
    assert [(line["request_id"], line["attempt_id"], line["job_id"]) for line in sent] == [
        (request_id, attempt_id, job_id)
    ]
    restore_path = f"/jobs/{job_id}/restore"
    access = [line for line in web_lines if line["logger"] == "uvicorn.access" and restore_path in line["event"]]
    assert [(line["request_id"], line["job_id"]) for line in access] == [(request_id, job_id)]
    # The worker side: every line of the run carries the same request id and the attempt's fields.
    of_attempt = [line for line in worker_lines if line.get("attempt_id") == attempt_id]
    # The ready email goes out from an actor of its own, under the same request id.
    emailed = [line for line in of_attempt if line.get("actor") == "send_ready_email"]
    assert [(line["event"], line["request_id"]) for line in emailed] == [("email.sent", request_id)]
    run = [line for line in of_attempt if line.get("actor") != "send_ready_email"]
    assert {line["event"] for line in run} >= {"attempt.claimed", "attempt.submitted", "attempt.finished"}
    for line in run:
        assert line["request_id"] == request_id
        assert line["job_id"] == job_id
        assert line["kind"] == "restore"
        assert line["tries"] == 1
        assert line["actor"] == "process_restoration"
    submitted = next(line for line in run if line["event"] == "attempt.submitted")
    assert submitted["engine"] == "comfyui"
    assert submitted["node"].startswith("http://127.0.0.1:")
    assert submitted["prompt_id"]
    last = next(line for line in run if line["event"] == "attempt.finished")
    assert last["outcome"] == "succeeded"
    assert (last["node"], last["prompt_id"]) == (submitted["node"], submitted["prompt_id"])
    # Lines outside the run (the worker starting, the next message) do not keep its fields.
    assert not any(line.get("attempt_id") for line in worker_lines if "Worker process is ready" in line["event"])

    # The animation of the restore: the same on its own path, with its own request id and kind.
    animated = requests.post(
        f"{web.url}/api/v1/jobs/{job_id}/animate",
        json={"parameters": SMALL_ANIMATION},
        headers={"X-Job-Token": token, "X-Request-ID": "animate-1"},
        timeout=30,
    )
    assert animated.status_code == 202, animated.text
    animation_id = animated.json()["id"]
    answer = wait_for(lambda: finished(web, job_id, token, "animation_attempts"), what="the animation")
    assert answer["animation_attempts"][0]["status"] == "succeeded"
    wait_for(lambda: worker.log().count('"attempt.finished"') == 2, what="the animation's last line")
    run = [
        line
        for line in json_lines(worker.log())
        if line.get("attempt_id") == animation_id and line.get("actor") != "send_ready_email"
    ]
    assert {line["event"] for line in run} >= {"attempt.claimed", "attempt.submitted", "attempt.finished"}
    assert {(line["request_id"], line["kind"], line["job_id"], line["actor"]) for line in run} == {
        ("animate-1", "animate_preview", job_id, "process_animation")
    }


def test_it_keeps_addresses_tokens_access_values_signatures_and_image_bytes_out_of_every_log_line(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    pipeline_web: Callable[..., WebProcess],
    s3_bucket: Any,
    jpeg_upload: Any,
) -> None:
    # DEBUG: botocore then prints request bodies (the photos) and the signatures it computes, urllib3 every URL.
    worker = pipeline_worker(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    web = pipeline_web(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    email = "margaret.okafor@example.org"
    photo = jpeg_upload.getvalue()

    uploaded = requests.post(
        f"{web.url}/api/v1/jobs/upload",
        files={"image": ("photo.jpg", photo, "image/jpeg")},
        data={"email": email, "restore": "true"},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    job_id, token = uploaded.json()["id"], uploaded.json()["token"]
    answer = wait_for(lambda: finished(web, job_id, token), what="the restore")
    restore = answer["restore_attempts"][0]
    assert restore["status"] == "succeeded"
    result_url = restore["result_url"]
    signature = re.search(r"X-Amz-Signature=([0-9a-f]+)", result_url)
    assert signature is not None, result_url
    credential = re.search(r"X-Amz-Credential=([^&]+)", result_url)
    assert credential is not None
    restored_image = requests.get(result_url, timeout=10).content
    assert restored_image[:3] == b"\xff\xd8\xff"

    mails = wait_for(worker.emails, what="the ready email")
    assert mails[0]["To"] == email
    body = mails[0].get_payload(0).get_payload(decode=True).decode()
    access = re.search(r"[?&]access=([^&\s]+)", body)
    assert access is not None, body
    # The email link's access value, in the header (the API) and in the address (the page, the first visit).
    by_access = requests.get(f"{web.url}/api/v1/jobs/{job_id}", headers={"X-Job-Access": access.group(1)}, timeout=10)
    assert by_access.status_code == 200
    assert requests.get(f"{web.url}/j/{job_id}?access={access.group(1)}", timeout=10).status_code == 200
    assert requests.get(f"{web.url}/api/v1/jobs/{job_id}?token={token}", timeout=10).status_code == 200
    wait_for(lambda: '"email.sent"' in worker.log(), what="the worker's line about the email")

    logs = {"web": web.log(), "worker": worker.log()}
    secrets = {
        "the email address": email,
        "the token": token,
        "the access value": access.group(1),
        "the presigned signature": signature.group(1),
        "the presigned credential": credential.group(1).split("%2F")[0],
        "the photo's bytes (base64)": base64.b64encode(photo[:600]).decode()[200:260],
        "the restored image's bytes (base64)": base64.b64encode(restored_image[:600]).decode()[200:260],
        "bytes printed as a repr": "\\xff\\xd8\\xff",
    }
    for side, text in logs.items():
        assert len(json_lines(text)) > 20, f"the {side} logged almost nothing:\n{text[:2000]}"
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in the {side}'s log"
    # What stands in their place, so the lines still say what happened.
    assert "m***@example.org" in logs["worker"]
    assert f"/j/{job_id}?access=[redacted]" in logs["web"]
    assert f"/api/v1/jobs/{job_id}?token=[redacted]" in logs["web"]
