"""What a customer sees of an attempt: never a node's address, a prompt id or an engine's own words.

Every kind of attempt, in every state, with every error the engines and the runner
record, is read back through ``GET /jobs/{id}`` and rendered into its ready email; none
of them may carry what staff see in the admin. And every error code the code base can
record has a deliberate public meaning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from rest_framework.test import APIClient

from jobs.customer_errors import _PUBLIC_CODE_OF, PUBLIC_CODES, CustomerError, customer_error
from jobs.kinds import attempt_kinds
from jobs.models import Attempt, AttemptStatus, Job
from jobs.notifications import job_ready_email_send
from rekindle.testing.factories import (
    AnimationAttemptFactory,
    HDAttemptFactory,
    JobFactory,
    RestoreAttemptFactory,
    token_of,
)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
NODE = "http://gpu-node-17.internal:8188"
PROMPT_ID = "5f0c2a9e-prompt-7781"
ENGINE_TEXT = f"ComfyUI node {NODE} rejected the workflow: KeyError: 'clip_l.safetensors'"
TRACEBACK = 'Traceback (most recent call last):\n  File "/comfy/execution.py", line 316, in execute'
STAFF_ONLY = (NODE, "gpu-node-17", PROMPT_ID, ENGINE_TEXT, "KeyError", "Traceback", "execution.py")

# Where error codes are born: the engines (EngineError subclasses), the runner (classify, BadInput),
# the lifecycle (the cron's worker_lost, a cancel).
_CODE_SOURCES = ("rekindle/engines", "jobs", "restoration", "animation")
_CODE_PATTERNS = (
    re.compile(r"(?:Transient|Permanent)EngineError\(\s*\"([a-z_]+)\""),
    re.compile(r"BadInput\(\s*\"([a-z_]+)\""),
    re.compile(r"return \"(?:transient|permanent)\", \"([a-z_]+)\""),
    re.compile(r"error_type=\"([a-z_]+)\""),
)


def recorded_error_codes() -> set[str]:
    codes: set[str] = set()
    for folder in _CODE_SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" in path.parts or "migrations" in path.parts:
                continue
            text = path.read_text()
            for pattern in _CODE_PATTERNS:
                codes.update(pattern.findall(text))
    return codes


def test_it_gives_every_error_code_the_code_records_a_deliberate_public_meaning() -> None:
    codes = recorded_error_codes()
    assert len(codes) > 20  # the scan finds the engines' codes
    undecided = sorted(codes - set(_PUBLIC_CODE_OF))
    assert undecided == [], f"map these codes in jobs/customer_errors.py: {undecided}"


def _staff_details(attempt: Attempt, *, status: str, error_type: str) -> None:
    type(attempt)._default_manager.filter(pk=attempt.pk).update(
        status=status,
        node=NODE,
        prompt_id=PROMPT_ID,
        engine="comfyui",
        error_type=error_type,
        error_message=ENGINE_TEXT,
        error_details={"node": NODE, "prompt_id": PROMPT_ID, "traceback": TRACEBACK},
    )


def _attempts_of_every_kind(job: Job) -> list[Attempt]:
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, hd_paid=True)
    hd = HDAttemptFactory.create(animation=animation)
    made = [restore, animation, hd]
    assert {type(a) for a in made} == {kind.model for kind in attempt_kinds()}
    return made


def _assert_staff_words_absent(text: str, where: str) -> None:
    for secret in STAFF_ONLY:
        assert secret not in text, f"{secret!r} shown to the customer in {where}"


ERROR_CODES = sorted({*recorded_error_codes(), "internal_error", "canceled"})
STATES = (AttemptStatus.QUEUED, AttemptStatus.RUNNING, AttemptStatus.FAILED, AttemptStatus.CANCELED)


@pytest.mark.parametrize("status", STATES)
def test_it_shows_no_node_or_engine_text_in_the_job_of_any_kind_state_or_error(status: str) -> None:
    client = APIClient()
    for error_type in ERROR_CODES:
        job = JobFactory.create()
        for attempt in _attempts_of_every_kind(job):
            _staff_details(attempt, status=status, error_type=error_type)

        response = client.get(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": token_of(job)})

        assert response.status_code == 200
        _assert_staff_words_absent(response.content.decode(), f"GET /jobs/{{id}} ({status}, {error_type})")
        body = response.json()
        errors = [a["error"] for a in body["restore_attempts"] + body["animation_attempts"]]
        errors += [a["hd_error"] for a in body["animation_attempts"]]
        for error in errors:
            if status == AttemptStatus.RUNNING:
                assert error is None
            else:
                assert error["code"] in PUBLIC_CODES
                assert error["message"]


@pytest.mark.parametrize("status", [AttemptStatus.SUCCEEDED, AttemptStatus.FAILED])
def test_it_writes_no_node_or_engine_text_into_any_ready_email(status: str) -> None:
    for error_type in ERROR_CODES:
        job = JobFactory.create()
        for attempt in _attempts_of_every_kind(job):
            _staff_details(attempt, status=status, error_type=error_type)
            fresh: Any = type(attempt)._default_manager.get(pk=attempt.pk)
            assert job_ready_email_send(attempt=fresh, force=True)

    assert len(mail.outbox) == len(ERROR_CODES) * len(attempt_kinds())
    for message in mail.outbox:
        assert isinstance(message, EmailMultiAlternatives)
        html = message.alternatives[0][0]
        for part in (message.subject, message.body, html):
            _assert_staff_words_absent(str(part), f"the email {message.subject!r}")


def test_it_tells_the_person_in_words_of_the_kind_of_work() -> None:
    job = JobFactory.create()
    restore, animation, hd = _attempts_of_every_kind(job)
    for attempt in (restore, animation, hd):
        _staff_details(attempt, status=AttemptStatus.FAILED, error_type="nodes_unavailable")
        attempt.refresh_from_db()

    assert [customer_error(a).message for a in (restore, animation, hd)] == [  # type: ignore[union-attr]
        "We could not restore this photo because our service is having trouble. Please try again later.",
        "We could not animate this photo because our service is having trouble. Please try again later.",
        "We could not make your HD video because our service is having trouble. Please try again later.",
    ]
    _staff_details(restore, status=AttemptStatus.QUEUED, error_type="node_unavailable")
    restore.refresh_from_db()
    assert customer_error(restore) == CustomerError(
        code="retrying", message="We ran into a problem and will try to restore this photo again in a moment."
    )
