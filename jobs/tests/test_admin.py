"""The job admin as staff use it: list, search, filters, thumbnails, attempts inline, delete with files."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.models import AttemptStatus, FileCleanup, Job
from rekindle import storage
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, UserFactory
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db

XSS = '<script>alert("pwned")</script>'
LIST_URL = reverse("admin:jobs_job_changelist")


def _job_with_history(**fields: Any) -> Job:
    """A job with a selected restore, a failed restore and an animation with its HD result."""
    job = JobFactory.create(**fields)
    selected = RestoreAttemptFactory.create(job=job, succeeded=True, queued_at=timezone.now() - timedelta(minutes=9))
    RestoreAttemptFactory.create(job=job, failed=True, queued_at=timezone.now() - timedelta(minutes=5))
    Job.objects.filter(pk=job.pk).update(selected_restore=selected)
    AnimationAttemptFactory.create(job=job, restore=selected, succeeded=True, hd_ready=True)
    job.refresh_from_db()
    return job


def _ids_in(response: Any) -> set[str]:
    return {str(job.pk) for job in response.context["cl"].result_list}


def test_it_lists_jobs_with_thumbnails_latest_states_and_counts(admin_client: Client) -> None:
    job = _job_with_history()
    assert job.selected_restore is not None

    response = admin_client.get(LIST_URL)

    assert response.status_code == 200
    body = response.content.decode()
    assert job.email in body
    assert str(job.pk)[:8] in body
    # Thumbnails point at the stored keys through short-lived URLs, never at bytes in the page.
    assert storage.url_for(job.original_key) in body
    assert storage.url_for(job.selected_restore.result_key) in body
    assert 'class="rk-status rk-status-failed"' in body  # the newest restore failed
    assert 'class="rk-status rk-status-succeeded"' in body  # the animation
    assert '<td class="field-restore_count">2</td>' in body
    assert '<td class="field-animation_count">1</td>' in body


def test_it_shows_presigned_urls_on_s3(admin_client: Client, s3_bucket: S3Bucket) -> None:
    job = JobFactory.create(stored_original=True)
    body = admin_client.get(LIST_URL).content.decode()
    assert f"/{s3_bucket.name}/{job.original_key}?" in body
    assert "X-Amz-Signature=" in body


def test_it_keeps_the_list_query_count_flat_as_rows_grow(admin_client: Client) -> None:
    _job_with_history()
    _job_with_history()
    admin_client.get(LIST_URL)  # warm the session and content types
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(LIST_URL).status_code == 200

    for _ in range(6):
        _job_with_history()
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST_URL)
    assert len(response.context["cl"].result_list) == 8
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def test_it_finds_jobs_by_email_by_id_by_id_prefix_and_by_attempt_id(admin_client: Client) -> None:
    wanted = _job_with_history(email="Grandma.Photos@example.com")
    other = _job_with_history(email="someone@example.org")
    attempt = RestoreAttempt.objects.filter(job=wanted).first()
    assert attempt is not None

    for term in ("grandma.photos", str(wanted.pk), str(wanted.pk)[:8], str(attempt.pk)):
        response = admin_client.get(LIST_URL, {"q": term})
        assert response.status_code == 200
        assert _ids_in(response) == {str(wanted.pk)}, term
    assert _ids_in(admin_client.get(LIST_URL, {"q": "example.org"})) == {str(other.pk)}


def test_it_filters_by_latest_attempt_state_hd_and_date(admin_client: Client) -> None:
    failed_last = _job_with_history()
    fresh = JobFactory.create()
    succeeded_last = JobFactory.create(created_at=timezone.now() - timedelta(days=40))
    hours_ago = timezone.now() - timedelta(hours=3)
    restore = RestoreAttemptFactory.create(job=succeeded_last, failed=True, queued_at=hours_ago)
    RestoreAttemptFactory.create(job=succeeded_last, succeeded=True, queued_at=hours_ago + timedelta(hours=2))
    AnimationAttemptFactory.create(job=succeeded_last, restore=restore, hd_paid=True)

    def ids(**params: str) -> set[str]:
        response = admin_client.get(LIST_URL, params)
        assert response.status_code == 200
        return _ids_in(response)

    assert ids(latest_restore="failed") == {str(failed_last.pk)}
    assert ids(latest_restore="succeeded") == {str(succeeded_last.pk)}
    assert ids(latest_restore="none") == {str(fresh.pk)}
    assert ids(latest_animation="queued") == {str(succeeded_last.pk)}
    assert ids(hd="yes") == {str(failed_last.pk)}
    assert ids(hd="paid") == {str(failed_last.pk), str(succeeded_last.pk)}
    assert ids(hd="no") == {str(fresh.pk), str(succeeded_last.pk)}
    # The admin's own "Past 7 days" link: local midnight seven days ago, with its offset.
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    since = str(midnight - timedelta(days=7))
    assert ids(created_at__gte=since) == {str(failed_last.pk), str(fresh.pk)}


def test_it_shows_a_job_read_only_with_its_attempts_inline(admin_client: Client) -> None:
    job = _job_with_history()
    failing = RestoreAttemptFactory.create(
        job=job, failed=True, node="http://gpu-1:8188", error_type="execution_failed", error_message=XSS
    )

    response = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk]))

    assert response.status_code == 200
    body = response.content.decode()
    assert storage.url_for(job.original_key) in body
    assert "http://gpu-1:8188" in body
    assert str(failing.pk)[:8] in body
    assert "execution_failed" in body
    assert XSS not in body
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in body
    assert "30.0 s" in body  # the succeeded restore's duration
    # Nothing to edit: no email input, no Save button; the token hash is never shown.
    assert 'name="email"' not in body
    assert 'name="_save"' not in body
    assert job.token_hash not in body


def test_it_deletes_jobs_with_their_files_through_the_delete_action(
    admin_client: Client,
    s3_bucket: S3Bucket,
    stub_broker: Any,
    stub_worker: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    doomed = JobFactory.create(stored_original=True)
    result = RestoreAttemptFactory.create(job=doomed, succeeded=True)
    storage.put(result.result_key, b"restored")
    kept = JobFactory.create(stored_original=True)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            LIST_URL, {"action": "delete_selected", "_selected_action": [str(doomed.pk)], "post": "yes"}, follow=True
        )
    stub_broker.join("default")

    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert "The files of 1 job are being removed from storage." in shown
    assert list(Job.objects.values_list("pk", flat=True)) == [kept.pk]
    assert s3_bucket.keys() == [kept.original_key]


def test_it_deletes_one_job_from_its_page_through_the_service(
    admin_client: Client,
    s3_bucket: S3Bucket,
    stub_broker: Any,
    stub_worker: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    job = JobFactory.create(stored_original=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:jobs_job_delete", args=[job.pk]), {"post": "yes"})
    stub_broker.join("default")
    assert response.status_code == 302
    assert not Job.objects.exists()
    assert s3_bucket.keys() == []


def test_it_cannot_add_jobs_by_hand(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:jobs_job_add")).status_code == 403


@pytest.mark.parametrize("name", ["admin:jobs_job_changelist", "admin:jobs_job_change"])
def test_it_keeps_people_who_are_not_staff_out(client: Client, name: str) -> None:
    job = JobFactory.create()
    url = reverse(name, args=[job.pk] if name.endswith("change") else [])
    client.force_login(UserFactory.create())
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_lets_a_staff_member_without_job_permissions_see_nothing(client: Client) -> None:
    client.force_login(UserFactory.create(is_staff=True))
    assert client.get(LIST_URL).status_code == 403


def test_it_shows_status_labels_for_every_state(admin_client: Client) -> None:
    for status in AttemptStatus.values:
        RestoreAttemptFactory.create(status=status)
    body = admin_client.get(LIST_URL).content.decode()
    for status in AttemptStatus.values:
        assert f"rk-status-{status}" in body


def test_it_lists_owed_file_cleanups_read_only(admin_client: Client) -> None:
    owed = FileCleanup.objects.create(job_id=uuid.uuid4())

    listing = admin_client.get("/admin/jobs/filecleanup/")
    page = admin_client.get(f"/admin/jobs/filecleanup/{owed.pk}/change/")

    assert listing.status_code == 200
    assert str(owed.job_id) in listing.content.decode()
    assert page.status_code == 200
    assert admin_client.post(f"/admin/jobs/filecleanup/{owed.pk}/delete/", {"post": "yes"}).status_code == 403
    assert FileCleanup.objects.filter(pk=owed.pk).exists()
