"""The restore, select-restore and animate endpoints, and what GET /jobs/{id} shows of attempts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from animation.models import AnimationAttempt
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import AnimationAttemptFactory, HDAttemptFactory, JobFactory, RestoreAttemptFactory
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db


def client_for(job: Job) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_JOB_TOKEN=job.token)  # type: ignore[attr-defined]
    return client


def test_it_queues_a_restore_and_sends_its_message_after_commit(queued, django_capture_on_commit_callbacks) -> None:
    job = JobFactory.create()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(job).post(
            f"/api/v1/jobs/{job.id}/restore", {"parameters": {"seed": 5, "steps": 10}}, format="json"
        )

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued"
    attempt = RestoreAttempt.objects.get(pk=body["id"])
    assert attempt.job_id == job.id
    assert attempt.parameters["seed"] == 5
    assert attempt.parameters["steps"] == 10
    assert attempt.parameters["megapixels"] == 1.0  # defaults filled in
    assert queued.ids("interactive") == [str(attempt.pk)]


def test_it_refuses_parameters_the_workflow_does_not_allow() -> None:
    job = JobFactory.create()

    response = client_for(job).post(
        f"/api/v1/jobs/{job.id}/restore", {"parameters": {"steps": 500, "colour": "red"}}, format="json"
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameters"
    assert set(error["details"]["fields"]) == {"steps", "colour"}
    assert RestoreAttempt.objects.count() == 0


def test_it_refuses_more_work_than_the_job_may_have_in_flight(settings) -> None:
    settings.MAX_ATTEMPTS_IN_FLIGHT = 2
    job = JobFactory.create()
    RestoreAttemptFactory.create(job=job)
    RestoreAttemptFactory.create(job=job, status=AttemptStatus.RUNNING)

    response = client_for(job).post(f"/api/v1/jobs/{job.id}/restore", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "too_many_in_flight"
    assert RestoreAttempt.objects.filter(job=job).count() == 2


def test_it_hides_the_job_from_another_jobs_token() -> None:
    job, other = JobFactory.create(), JobFactory.create()

    response = client_for(other).post(f"/api/v1/jobs/{job.id}/restore", {}, format="json")

    assert response.status_code == 404
    assert RestoreAttempt.objects.count() == 0


def test_it_queues_the_first_restore_with_the_upload(queued, jpeg_upload, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post(
            "/api/v1/jobs/upload", {"image": jpeg_upload, "email": "a@example.com", "restore": "true"}
        )

    assert response.status_code == 201, response.json()
    attempts = response.json()["restore_attempts"]
    assert [a["status"] for a in attempts] == ["queued"]
    assert queued.ids("interactive") == [attempts[0]["id"]]


def test_it_selects_only_a_succeeded_restore_of_the_job() -> None:
    job = JobFactory.create()
    succeeded = RestoreAttemptFactory.create(job=job, succeeded=True)
    failed = RestoreAttemptFactory.create(job=job, failed=True)
    elsewhere = RestoreAttemptFactory.create(succeeded=True)
    client = client_for(job)
    url = f"/api/v1/jobs/{job.id}/select-restore"

    assert client.post(url, {"restore_id": str(succeeded.pk)}, format="json").json()["selected_restore"] == str(
        succeeded.pk
    )
    for attempt in (failed, elsewhere):
        response = client.post(url, {"restore_id": str(attempt.pk)}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "restore_not_selectable"
    assert client.post(url, {"restore_id": "nope"}, format="json").status_code == 400
    job.refresh_from_db()
    assert job.selected_restore_id == succeeded.pk


def test_it_animates_the_selected_restore_or_the_one_named(queued, django_capture_on_commit_callbacks) -> None:
    job = JobFactory.create()
    selected = RestoreAttemptFactory.create(job=job, succeeded=True)
    other = RestoreAttemptFactory.create(job=job, succeeded=True)
    Job.objects.filter(pk=job.pk).update(selected_restore=selected)
    client = client_for(job)

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(f"/api/v1/jobs/{job.id}/animate", {"parameters": {"seconds": 1}}, format="json")
        second = client.post(f"/api/v1/jobs/{job.id}/animate", {"restore_id": str(other.pk)}, format="json")

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["restore_id"] == str(selected.pk)
    assert second.json()["restore_id"] == str(other.pk)
    assert sorted(queued.ids("interactive")) == sorted([first.json()["id"], second.json()["id"]])


def test_it_refuses_to_animate_before_any_restore_succeeded() -> None:
    job = JobFactory.create()
    RestoreAttemptFactory.create(job=job, status=AttemptStatus.RUNNING)

    response = client_for(job).post(f"/api/v1/jobs/{job.id}/animate", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_restore_to_animate"
    assert AnimationAttempt.objects.count() == 0


def test_it_shows_each_attempt_with_its_state_timings_error_and_outputs() -> None:
    job = JobFactory.create()
    restore = RestoreAttemptFactory.create(job=job, succeeded=True, node="http://gpu-1:8188", tries=1)
    RestoreAttemptFactory.create(job=job, failed=True)
    unpaid = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True)
    HDAttemptFactory.create(animation=unpaid, succeeded=True)
    paid = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, hd_ready=True)

    body = client_for(job).get(f"/api/v1/jobs/{job.id}").json()

    done, failed = body["restore_attempts"]
    assert (done["status"], done["progress"], done["tries"]) == ("succeeded", 100, 1)
    # Which node ran it is for staff.
    assert "node" not in done
    assert "gpu-1" not in str(body)
    assert done["duration_seconds"] == pytest.approx(30, abs=1)
    assert done["result_url"].split("?")[0].endswith(restore.result_key)
    # The engine's own words stay in the admin; the person reads a sentence meant for them.
    assert failed["error"] == {
        "code": "processing_failed",
        "message": "We could not restore this photo. Please try again.",
    }
    animations = {a["id"]: a for a in body["animation_attempts"]}
    assert animations[str(unpaid.pk)]["hd_result_url"] is None
    assert animations[str(paid.pk)]["hd_result_url"].split("?")[0].endswith(paid.hd.result_key)
    assert animations[str(paid.pk)]["preview_url"] is not None
