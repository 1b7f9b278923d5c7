"""The animation attempt admin: video players, HD runs, and its actions through the pipeline's services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from animation.models import AnimationAttempt, HDAttempt
from jobs.models import AttemptStatus
from rekindle import storage
from rekindle.testing.factories import AnimationAttemptFactory, HDAttemptFactory, UserFactory

pytestmark = pytest.mark.django_db

XSS = "<svg onload=alert(1)>"
LIST_URL = reverse("admin:animation_animationattempt_changelist")


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _act(client: Client, action: str, attempts: list[AnimationAttempt]) -> Any:
    return client.post(LIST_URL, {"action": action, "_selected_action": [str(a.pk) for a in attempts]}, follow=True)


def test_it_lists_animations_with_thumbnails_and_hd_state(admin_client: Client) -> None:
    paid = AnimationAttemptFactory.create(succeeded=True, hd_ready=True)
    broken = AnimationAttemptFactory.create(
        status=AttemptStatus.FAILED, error_type="prompt_rejected", error_message=XSS
    )

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    body = response.content.decode()
    assert storage.url_for(paid.thumbnail_key) in body
    assert "paid" in body
    assert "prompt_rejected" in body
    assert str(broken.pk)[:8] in body
    assert XSS not in body
    assert "&lt;svg onload=alert(1)&gt;" in body


def test_it_keeps_the_list_query_count_flat_as_rows_grow(admin_client: Client) -> None:
    AnimationAttemptFactory.create(succeeded=True)
    admin_client.get(LIST_URL)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LIST_URL)
    for _ in range(6):
        AnimationAttemptFactory.create(succeeded=True, hd_ready=True)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST_URL)
    assert len(response.context["cl"].result_list) == 7
    assert len(many) == len(few)


def test_it_plays_the_preview_and_the_hd_result_in_the_page(admin_client: Client) -> None:
    attempt = AnimationAttemptFactory.create(succeeded=True, hd_paid=True)
    hd = HDAttemptFactory.create(
        animation=attempt,
        succeeded=True,
        node="http://gpu-9:8188",
        started_at=timezone.now() - timedelta(seconds=90),
        finished_at=timezone.now(),
    )

    response = admin_client.get(reverse("admin:animation_animationattempt_change", args=[attempt.pk]))

    assert response.status_code == 200
    body = response.content.decode()
    assert f'<video class="rk-video" controls preload="metadata" src="{storage.url_for(attempt.preview_key)}"' in body
    assert f'src="{storage.url_for(hd.result_key)}"' in body
    assert reverse("admin:animation_hdattempt_change", args=[hd.pk]) in body
    assert f'poster="{storage.url_for(attempt.thumbnail_key)}"' in body
    assert "http://gpu-9:8188" in body
    assert "1 min 30 s" in body
    assert reverse("admin:restoration_restoreattempt_change", args=[attempt.restore_id]) in body
    assert 'name="_save"' not in body
    assert 'name="hd_paid"' not in body


def test_it_shows_the_full_hd_error_escaped(admin_client: Client) -> None:
    attempt = AnimationAttemptFactory.create(succeeded=True, hd_paid=True)
    HDAttemptFactory.create(
        animation=attempt,
        status=AttemptStatus.FAILED,
        error_type="execution_failed",
        error_message="VAEDecode: " + XSS,
        error_details={"exception_message": XSS, "node_type": "VAEDecode", "node_id": "8"},
    )
    body = admin_client.get(reverse("admin:animation_animationattempt_change", args=[attempt.pk])).content.decode()
    assert "The node said in VAEDecode 8:" in body
    assert "VAEDecode: &lt;svg onload=alert(1)&gt;" in body
    assert XSS not in body


def test_it_requeues_failed_previews_and_failed_hd_runs(
    admin_client: Client, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    preview_failed = AnimationAttemptFactory.create(status=AttemptStatus.FAILED, error_type="timeout")
    failed_run = HDAttemptFactory.create(failed=True)
    hd_failed = failed_run.animation
    running = AnimationAttemptFactory.create(
        status=AttemptStatus.RUNNING, tries=1, lease_expires_at=timezone.now() + timedelta(minutes=5)
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client, "requeue_attempts", [preview_failed, hd_failed, running])

    assert _messages(response) == ["Requeued 2 attempts, skipped 1 that was running"]
    preview_failed.refresh_from_db()
    hd_failed.refresh_from_db()
    assert preview_failed.status == AttemptStatus.QUEUED
    assert hd_failed.status == AttemptStatus.SUCCEEDED
    assert hd_failed.hd.status == AttemptStatus.QUEUED
    assert queued.calls("bulk") == [("process_animation", str(preview_failed.pk))]
    assert queued.calls("paid") == [("generate_hd_result", str(failed_run.pk))]


def test_it_cancels_a_queued_preview_or_hd_run(admin_client: Client) -> None:
    preview_queued = AnimationAttemptFactory.create()
    hd_queued = HDAttemptFactory.create().animation
    finished = AnimationAttemptFactory.create(succeeded=True)

    response = _act(admin_client, "cancel_attempts", [preview_queued, hd_queued, finished])

    assert _messages(response) == ["Canceled 2 attempts, skipped 1 that had succeeded"]
    preview_queued.refresh_from_db()
    hd_queued.refresh_from_db()
    assert preview_queued.status == AttemptStatus.CANCELED
    assert hd_queued.status == AttemptStatus.SUCCEEDED
    assert hd_queued.hd.status == AttemptStatus.CANCELED


def test_it_resends_the_newest_ready_email(
    admin_client: Client, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    preview_only = AnimationAttemptFactory.create(succeeded=True, notified_at=timezone.now())
    with_hd = AnimationAttemptFactory.create(succeeded=True, hd_ready=True)
    HDAttempt.objects.filter(animation=with_hd).update(notified_at=timezone.now())
    waiting = AnimationAttemptFactory.create()

    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client, "resend_ready_email", [preview_only, with_hd, waiting])

    assert _messages(response) == ["Queued for a worker to send: 2 ready emails, skipped 1 not finished yet"]
    assert queued.run_here("default") == 2
    assert sorted(message.to[0] for message in mail.outbox) == sorted([preview_only.job.email, with_hd.job.email])


def test_it_keeps_people_who_are_not_staff_out(client: Client) -> None:
    attempt = AnimationAttemptFactory.create(succeeded=True)
    client.force_login(UserFactory.create())
    for url in (LIST_URL, reverse("admin:animation_animationattempt_change", args=[attempt.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    client.post(
        LIST_URL, {"action": "grant_hd_comp", "apply": "1", "reason": "x", "_selected_action": [str(attempt.pk)]}
    )
    attempt.refresh_from_db()
    assert not attempt.hd_paid
