"""Ready emails: sent once per finished attempt, resendable by staff, linking to the job with a signed access value."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from rest_framework.test import APIClient

from jobs.notifications import job_ready_email_send
from rekindle.testing.factories import AnimationAttemptFactory, RestoreAttemptFactory

pytestmark = pytest.mark.django_db


def test_it_emails_once_per_finished_attempt_unless_forced() -> None:
    attempt = RestoreAttemptFactory.create(succeeded=True)

    assert job_ready_email_send(attempt=attempt)
    assert not job_ready_email_send(attempt=attempt)
    assert job_ready_email_send(attempt=attempt, force=True)

    assert len(mail.outbox) == 2
    message = mail.outbox[0]
    assert message.to == [attempt.job.email]
    assert message.subject == "Your restored photo is ready"
    html = message.alternatives[0]  # type: ignore[attr-defined]
    assert html[1] == "text/html"
    assert "restored photo is ready" in html[0]


def test_it_does_not_email_an_attempt_that_has_not_finished() -> None:
    attempt = RestoreAttemptFactory.create()

    assert not job_ready_email_send(attempt=attempt, force=True)
    assert mail.outbox == []


def test_it_names_the_hd_result() -> None:
    animation = AnimationAttemptFactory.create(succeeded=True, hd_ready=True)

    assert job_ready_email_send(attempt=animation.hd)

    assert mail.outbox[0].subject == "Your HD video is ready"


def test_it_links_to_the_job_with_an_access_value_the_api_accepts() -> None:
    attempt = RestoreAttemptFactory.create(failed=True)
    job_ready_email_send(attempt=attempt)

    body = str(mail.outbox[0].body)
    assert "We could not restore this photo. Please try again." in body
    assert "The engine could not process the image." not in body
    link = re.search(r"https?://\S+", body)
    assert link is not None
    path = link.group(0).split("://", 1)[1].split("/", 1)[1]
    client = APIClient()

    # The job page, which hands the access value on to the API.
    assert path.startswith(f"j/{attempt.job_id}?access=")
    assert 'data-link-state="valid"' in client.get(f"/{path}").content.decode()
    query = path.split("?", 1)[1]
    assert client.get(f"/api/v1/jobs/{attempt.job_id}?{query}").status_code == 200
    assert client.get(f"/api/v1/jobs/{attempt.job_id}?{query}x").status_code == 404
    other = RestoreAttemptFactory.create(failed=True)
    assert client.get(f"/api/v1/jobs/{other.job_id}?{query}").status_code == 404


def test_it_says_when_the_local_development_engine_made_the_result() -> None:
    local = RestoreAttemptFactory.create(succeeded=True, engine="local")
    gpu = RestoreAttemptFactory.create(succeeded=True, engine="comfyui")

    job_ready_email_send(attempt=local)
    job_ready_email_send(attempt=gpu)

    local_mail, gpu_mail = mail.outbox
    assert "Local CPU engine (development)" in local_mail.body
    assert "Local CPU engine (development)" in local_mail.alternatives[0][0]  # type: ignore[attr-defined]
    assert "development" not in gpu_mail.body
