"""The restore attempt admin: list and detail pages, and each action through the pipeline's services."""

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

from jobs.models import AttemptStatus, Job
from rekindle import storage
from rekindle.testing.comfyui_fixtures import StandinNode
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, UserFactory
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db

XSS = "<img src=x onerror=alert(document.cookie)>"
LIST_URL = reverse("admin:restoration_restoreattempt_changelist")


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _act(client: Client, action: str, attempts: list[RestoreAttempt], **extra: Any) -> Any:
    data = {"action": action, "_selected_action": [str(a.pk) for a in attempts], **extra}
    return client.post(LIST_URL, data, follow=True)


def _running(**fields: Any) -> RestoreAttempt:
    return RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING,
        started_at=timezone.now() - timedelta(seconds=10),
        lease_expires_at=timezone.now() + timedelta(minutes=5),
        tries=1,
        **fields,
    )


def _status(attempt: RestoreAttempt) -> str:
    attempt.refresh_from_db()
    return attempt.status


def test_it_lists_attempts_with_status_progress_duration_node_error_and_result(admin_client: Client) -> None:
    done = RestoreAttemptFactory.create(succeeded=True, node="http://gpu-2:8188")
    broken = RestoreAttemptFactory.create(failed=True, error_type="execution_failed", error_message=XSS)
    _running(progress=42)

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    body = response.content.decode()
    assert "http://gpu-2:8188" in body
    assert "30.0 s" in body
    assert 'style="width: 42%"' in body
    assert storage.url_for(done.result_key) in body
    assert done.job.email in body
    assert "execution_failed" in body
    assert str(broken.pk)[:8] in body
    assert XSS not in body
    assert "&lt;img src=x onerror=alert(document.cookie)&gt;" in body


def test_it_keeps_the_list_query_count_flat_as_rows_grow(admin_client: Client) -> None:
    for _ in range(2):
        RestoreAttemptFactory.create(succeeded=True)
    admin_client.get(LIST_URL)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LIST_URL)
    for _ in range(7):
        RestoreAttemptFactory.create(failed=True)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST_URL)
    assert len(response.context["cl"].result_list) == 9
    assert len(many) == len(few)


def test_it_shows_the_result_and_the_full_error_with_the_nodes_message(admin_client: Client) -> None:
    done = RestoreAttemptFactory.create(succeeded=True)
    broken = RestoreAttemptFactory.create(
        failed=True,
        node="http://gpu-3:8188",
        error_type="execution_failed",
        error_message="KSampler failed: " + XSS,
        error_details={
            "node_id": "31",
            "node_type": "KSampler",
            "exception_type": "torch.OutOfMemoryError",
            "exception_message": "Allocation on device " + XSS,
            "tries": 1,
        },
    )

    body = admin_client.get(reverse("admin:restoration_restoreattempt_change", args=[done.pk])).content.decode()
    assert f'<img src="{storage.url_for(done.result_key)}" class="rk-preview"' in body
    # Read-only: no field can be edited and there is nothing to save.
    assert 'name="_save"' not in body
    for field in ("status", "workflow", "result_key", "error_message", "node"):
        assert f'name="{field}"' not in body

    response = admin_client.get(reverse("admin:restoration_restoreattempt_change", args=[broken.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "The node said in KSampler 31:" in body
    assert "torch.OutOfMemoryError: Allocation on device &lt;img src=x" in body
    assert "KSampler failed: &lt;img" in body
    assert "http://gpu-3:8188" in body
    assert XSS not in body


def test_it_finds_attempts_by_email_attempt_id_and_job_id_and_filters_by_error(admin_client: Client) -> None:
    job = JobFactory.create(email="Anna@Example.com")
    mine = RestoreAttemptFactory.create(job=job, failed=True)
    other = RestoreAttemptFactory.create(succeeded=True)

    def ids(**params: str) -> set[str]:
        response = admin_client.get(LIST_URL, params)
        assert response.status_code == 200
        return {str(a.pk) for a in response.context["cl"].result_list}

    assert ids(q="anna@") == {str(mine.pk)}
    assert ids(q=str(mine.pk)) == {str(mine.pk)}
    assert ids(q=str(mine.pk)[:8]) == {str(mine.pk)}
    assert ids(q=str(job.pk)) == {str(mine.pk)}
    assert ids(has_error="yes") == {str(mine.pk)}
    assert ids(has_error="no") == {str(other.pk)}
    assert ids(status__exact="succeeded") == {str(other.pk)}


def test_it_requeues_failed_attempts_and_says_what_it_skipped(
    admin_client: Client, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    failed = [RestoreAttemptFactory.create(failed=True) for _ in range(3)]
    running = _running()

    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client, "requeue_attempts", [*failed, running])

    assert _messages(response) == ["Requeued 3 attempts, skipped 1 that was running"]
    assert [_status(a) for a in failed] == [AttemptStatus.QUEUED] * 3
    assert _status(running) == AttemptStatus.RUNNING
    # The same rows go back to the worker: one message each, carrying the attempt id.
    assert sorted(queued.ids("bulk")) == sorted(str(a.pk) for a in failed)
    failed[0].refresh_from_db()
    assert failed[0].error_type == ""


def test_it_cancels_queued_and_running_attempts_interrupting_the_node(
    admin_client: Client,
    comfy_settings: list[StandinNode],
    django_capture_on_commit_callbacks: Any,
) -> None:
    node = comfy_settings[0]
    queued = RestoreAttemptFactory.create()
    running = _running(engine="comfyui", node=node.url, prompt_id="0f6c3f6e-prompt-on-the-node")
    done = RestoreAttemptFactory.create(succeeded=True)

    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client, "cancel_attempts", [queued, running, done])

    assert _messages(response) == ["Canceled 2 attempts, skipped 1 that had succeeded"]
    assert _status(queued) == AttemptStatus.CANCELED
    assert _status(running) == AttemptStatus.CANCELED
    assert _status(done) == AttemptStatus.SUCCEEDED
    counters = node.counters()
    assert counters["interrupts"] == 1
    assert counters["queue_deletes"] == 1
    assert comfy_settings[1].counters().get("interrupts", 0) == 0


def test_it_sets_the_selected_restore_through_the_service(admin_client: Client) -> None:
    job = JobFactory.create()
    first = RestoreAttemptFactory.create(job=job, succeeded=True, queued_at=timezone.now() - timedelta(hours=2))
    Job.objects.filter(pk=job.pk).update(selected_restore=first)
    older = RestoreAttemptFactory.create(job=job, succeeded=True, queued_at=timezone.now() - timedelta(hours=1))
    newest = RestoreAttemptFactory.create(job=job, succeeded=True, queued_at=timezone.now())
    broken = RestoreAttemptFactory.create(job=job, failed=True)

    response = _act(admin_client, "select_restore", [older, newest, broken])

    assert _messages(response) == [
        "Selected 1 restore, skipped 1 had not succeeded and 1 of a job that got another one"
    ]
    job.refresh_from_db()
    assert job.selected_restore_id == newest.pk
    body = admin_client.get(LIST_URL).content.decode()
    assert body.count('alt="True"') == 1  # the "selected" column


def test_it_resends_the_ready_email_for_finished_attempts_only(
    admin_client: Client, queued: Any, django_capture_on_commit_callbacks: Any
) -> None:
    done = RestoreAttemptFactory.create(succeeded=True, notified_at=timezone.now() - timedelta(days=1))
    waiting = RestoreAttemptFactory.create()

    with django_capture_on_commit_callbacks(execute=True):
        response = _act(admin_client, "resend_ready_email", [done, waiting])

    assert _messages(response) == ["Queued for a worker to send: 1 ready email, skipped 1 not finished yet"]
    assert mail.outbox == []  # a hung mail server cannot hold the admin's page
    assert queued.run_here("default") == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [done.job.email]


def test_it_cannot_add_or_delete_attempts_by_hand(admin_client: Client) -> None:
    attempt = RestoreAttemptFactory.create()
    assert admin_client.get(reverse("admin:restoration_restoreattempt_add")).status_code == 403
    assert admin_client.get(reverse("admin:restoration_restoreattempt_delete", args=[attempt.pk])).status_code == 403


def test_it_keeps_people_who_are_not_staff_out(client: Client) -> None:
    attempt = RestoreAttemptFactory.create(failed=True)
    client.force_login(UserFactory.create())
    for url in (LIST_URL, reverse("admin:restoration_restoreattempt_change", args=[attempt.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    response = client.post(LIST_URL, {"action": "requeue_attempts", "_selected_action": [str(attempt.pk)]})
    assert response.status_code == 302
    assert _status(attempt) == AttemptStatus.FAILED


def test_it_refuses_actions_to_staff_who_may_only_view(client: Client) -> None:
    from django.contrib.auth.models import Permission

    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_restoreattempt"))
    client.force_login(viewer)
    attempt = RestoreAttemptFactory.create(failed=True)

    assert client.get(LIST_URL).status_code == 200
    client.post(LIST_URL, {"action": "requeue_attempts", "_selected_action": [str(attempt.pk)]})
    assert _status(attempt) == AttemptStatus.FAILED


def test_it_offers_the_actions_on_the_attempts_own_page_and_comes_back_to_it(
    admin_client: Client, stub_broker: Any, django_capture_on_commit_callbacks: Any
) -> None:
    attempt = RestoreAttemptFactory.create(failed=True)
    page = reverse("admin:restoration_restoreattempt_change", args=[attempt.pk])

    body = admin_client.get(page).content.decode()
    assert '<input type="hidden" name="action" value="requeue_attempts">' in body
    assert '<input type="hidden" name="action" value="select_restore">' in body
    assert "delete_selected" not in body

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            LIST_URL,
            {"action": "requeue_attempts", "_selected_action": [str(attempt.pk)], "_from_change_page": "1"},
        )
    assert response.status_code == 302
    assert response["Location"] == page
    assert _status(attempt) == AttemptStatus.QUEUED
    assert "Requeued 1 attempt" in admin_client.get(page).content.decode()


def test_it_shows_no_action_buttons_to_staff_who_may_only_view(client: Client) -> None:
    from django.contrib.auth.models import Permission

    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_restoreattempt"))
    client.force_login(viewer)
    attempt = RestoreAttemptFactory.create(failed=True)
    body = client.get(reverse("admin:restoration_restoreattempt_change", args=[attempt.pk])).content.decode()
    assert "requeue_attempts" not in body
