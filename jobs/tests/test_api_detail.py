"""GET /api/v1/jobs/{id}: who may read a job, what it shows, and a query count that does not grow."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.models import Job
from rekindle.testing.factories import (
    AnimationAttemptFactory,
    HDAttemptFactory,
    JobFactory,
    RestoreAttemptFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def detail(job_id: object) -> str:
    return f"/api/v1/jobs/{job_id}"


def test_it_lets_the_token_holder_read_the_job_by_header_or_query(api_client: APIClient) -> None:
    job = JobFactory.create(token="secret-token-a")

    by_header = api_client.get(detail(job.id), headers={"X-Job-Token": "secret-token-a"})
    by_query = api_client.get(detail(job.id), {"token": "secret-token-a"})

    assert by_header.status_code == 200
    assert by_header.json()["id"] == str(job.id)
    assert by_query.status_code == 200
    assert by_query.json() == by_header.json()


def test_it_lets_the_owner_read_the_job_without_a_token(api_client: APIClient) -> None:
    owner = UserFactory.create()
    job = JobFactory.create(owner=owner)
    api_client.force_authenticate(owner)
    assert api_client.get(detail(job.id)).status_code == 200
    api_client.force_authenticate(UserFactory.create())
    assert api_client.get(detail(job.id)).status_code == 404


def test_it_answers_404_alike_for_no_token_a_wrong_token_and_unknown_ids(api_client: APIClient) -> None:
    job = JobFactory.create(token="secret-token-a")
    other = JobFactory.create(token="secret-token-b")

    answers = [
        api_client.get(detail(job.id)),
        api_client.get(detail(job.id), headers={"X-Job-Token": "secret-token-b"}),  # another job's token
        api_client.get(detail(job.id), {"token": "secret-token-a-but-longer"}),
        api_client.get(detail(job.id), headers={"X-Job-Token": ""}),
        api_client.get(detail(uuid.uuid4()), headers={"X-Job-Token": "secret-token-a"}),
        api_client.get(detail("not-a-uuid"), headers={"X-Job-Token": "secret-token-a"}),
        api_client.get(detail(str(job.id)[:-1]), headers={"X-Job-Token": "secret-token-a"}),
    ]

    assert [answer.status_code for answer in answers] == [404] * len(answers)
    bodies = {answer.content for answer in answers}
    assert len(bodies) == 1
    assert answers[0].json()["error"]["code"] == "not_found"
    assert api_client.get(detail(other.id), headers={"X-Job-Token": "secret-token-b"}).status_code == 200


def test_it_shows_every_attempt_with_urls_of_its_outputs(api_client: APIClient) -> None:
    job = JobFactory.create(token="t")
    restored = RestoreAttemptFactory.create(job=job, succeeded=True)
    failed = RestoreAttemptFactory.create(job=job, failed=True)
    preview_only = AnimationAttemptFactory.create(job=job, restore=restored, succeeded=True)
    unpaid_hd = AnimationAttemptFactory.create(job=job, restore=restored, succeeded=True)
    HDAttemptFactory.create(animation=unpaid_hd, succeeded=True)
    paid_hd = AnimationAttemptFactory.create(job=job, restore=restored, succeeded=True, hd_ready=True)
    Job.objects.filter(pk=job.pk).update(selected_restore=restored, latest_animation=paid_hd)

    body = api_client.get(detail(job.id), headers={"X-Job-Token": "t"}).json()

    assert body["selected_restore"] == str(restored.id)
    assert body["latest_animation"] == str(paid_hd.id)
    assert body["original_url"] == f"http://testserver/media/processed/{job.id}.jpg"
    restores = {item["id"]: item for item in body["restore_attempts"]}
    assert list(restores) == [str(restored.id), str(failed.id)]
    good = restores[str(restored.id)]
    assert good["result_url"] == f"http://testserver/media/{restored.result_key}"
    assert good["status"] == "succeeded"
    assert good["progress"] == 100
    assert good["error"] is None
    assert good["duration_seconds"] == pytest.approx(30, abs=1)
    for field in ("workflow", "parameters", "engine", "queued_at", "started_at", "finished_at"):
        assert field in good
    assert good["engine_label"] == "Local CPU engine (development)"
    bad = restores[str(failed.id)]
    assert bad["result_url"] is None
    assert bad["error"] == {
        "code": "processing_failed",
        "message": "We could not restore this photo. Please try again.",
    }
    animations = {item["id"]: item for item in body["animation_attempts"]}
    assert animations[str(preview_only.id)]["preview_url"].endswith(preview_only.preview_key)
    assert animations[str(preview_only.id)]["thumbnail_url"].endswith(preview_only.thumbnail_key)
    assert animations[str(preview_only.id)]["restore_id"] == str(restored.id)
    assert animations[str(preview_only.id)]["hd_result_url"] is None
    assert animations[str(unpaid_hd.id)]["hd_result_url"] is None  # present but not paid for
    assert animations[str(paid_hd.id)]["hd_result_url"] == f"http://testserver/media/{paid_hd.hd.result_key}"
    assert "token" not in body
    assert "token_hash" not in body


def _queries_for_detail(client: APIClient, job: Job, token: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(detail(job.id), headers={"X-Job-Token": token})
    assert response.status_code == 200
    return len(queries.captured_queries), response.json()


def test_it_reads_a_job_in_the_same_number_of_queries_with_0_or_10_attempts(api_client: APIClient) -> None:
    empty = JobFactory.create(token="empty")
    busy = JobFactory.create(token="busy")
    restores = RestoreAttemptFactory.create_batch(5, job=busy, succeeded=True)
    for restore in restores:
        AnimationAttemptFactory.create(job=busy, restore=restore, succeeded=True, hd_ready=True)

    empty_count, empty_body = _queries_for_detail(api_client, empty, "empty")
    busy_count, busy_body = _queries_for_detail(api_client, busy, "busy")

    assert len(empty_body["restore_attempts"]) == 0
    assert len(busy_body["restore_attempts"]) == 5
    assert len(busy_body["animation_attempts"]) == 5
    assert busy_count == empty_count == 3  # the job, its restores, its animations


def test_it_keeps_every_api_answer_out_of_shared_caches(api_client: APIClient) -> None:
    job = JobFactory.create(token="t")
    answers = [
        api_client.get(detail(job.id), headers={"X-Job-Token": "t"}),
        api_client.get(detail(job.id)),  # the 404 too
        api_client.get("/api/schema/"),
    ]
    for answer in answers:
        assert set(answer["Cache-Control"].replace(" ", "").split(",")) >= {"private", "no-store"}
