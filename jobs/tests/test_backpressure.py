"""Backpressure: queued attempts show their place and estimated times; a full queue refuses, writing nothing."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from animation.models import AnimationAttempt, HDAttempt
from animation.services import hd_result_generate
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db


def client_for(job: Job) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_JOB_TOKEN=job.token)  # type: ignore[attr-defined]
    return client


@pytest.fixture
def media(settings: Settings) -> Path:
    """The test's own MEDIA_ROOT (local storage), where every stored file lands."""
    return Path(settings.MEDIA_ROOT)


def stored_files(media: Path) -> list[Path]:
    return sorted(path for path in media.rglob("*") if path.is_file())


def photo() -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 150, 100)).save(buffer, "JPEG")
    buffer.seek(0)
    buffer.name = "photo.jpg"
    return buffer


@pytest.fixture
def full_queue(settings: Settings) -> list[RestoreAttempt]:
    """Two restores waiting, with room for two: the interactive queue is full."""
    settings.QUEUE_MAX_DEPTH = 2
    settings.QUEUE_ESTIMATE_CACHE_SECONDS = 0
    return RestoreAttemptFactory.create_batch(2)


def assert_queue_full(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "queue_full"
    assert "busy" in response.json()["error"]["message"]
    assert int(response["Retry-After"]) >= 1


def test_it_refuses_a_restore_when_the_queue_is_full_and_writes_nothing(
    full_queue: list[RestoreAttempt], queued: Any, media: Path
) -> None:
    job = JobFactory.create(stored_original=True)
    rows, files = RestoreAttempt.objects.count(), stored_files(media)

    response = client_for(job).post(f"/api/v1/jobs/{job.id}/restore", {}, format="json")

    assert_queue_full(response)
    assert RestoreAttempt.objects.count() == rows
    assert stored_files(media) == files
    assert queued.ids("interactive") == []


def test_it_refuses_an_upload_with_restore_before_storing_anything(
    full_queue: list[RestoreAttempt], media: Path
) -> None:
    jobs, files = Job.objects.count(), stored_files(media)

    response = APIClient().post(
        "/api/v1/jobs/upload", {"image": photo(), "email": "a@example.com", "restore": "true"}, format="multipart"
    )

    assert_queue_full(response)
    assert Job.objects.count() == jobs
    assert RestoreAttempt.objects.count() == 2
    assert stored_files(media) == files


def test_it_refuses_an_animation_when_the_queue_is_full(full_queue: list[RestoreAttempt]) -> None:
    restore = RestoreAttemptFactory.create(succeeded=True)
    job = restore.job
    Job.objects.filter(pk=job.pk).update(selected_restore=restore)

    response = client_for(job).post(f"/api/v1/jobs/{job.id}/animate", {}, format="json")

    assert_queue_full(response)
    assert AnimationAttempt.objects.count() == 0


def test_it_never_refuses_a_paid_hd_run(settings: Settings, full_queue: list[RestoreAttempt]) -> None:
    settings.QUEUE_MAX_DEPTH = 1
    AnimationAttemptFactory.create_batch(2)  # previews waiting too
    animation = AnimationAttemptFactory.create(succeeded=True)
    AnimationAttempt.objects.filter(pk=animation.pk).update(hd_paid=True)
    animation.refresh_from_db()

    assert hd_result_generate(animation=animation)
    assert HDAttempt.objects.filter(animation=animation, status=AttemptStatus.QUEUED).exists()


def test_it_refuses_when_the_estimated_wait_is_too_long(settings: Settings) -> None:
    settings.QUEUE_MAX_WAIT_SECONDS = 100
    settings.QUEUE_DEFAULT_RUN_SECONDS = 60  # no history: 60 s a run on one slot
    RestoreAttemptFactory.create_batch(3)  # the new one would start in about 3 minutes
    job = JobFactory.create(stored_original=True)

    response = client_for(job).post(f"/api/v1/jobs/{job.id}/restore", {}, format="json")

    assert_queue_full(response)
    assert response.json()["error"]["details"]["estimated_wait_seconds"] >= 100


def _queue_of(job: Job) -> dict[str, Any] | None:
    [attempt] = client_for(job).get(f"/api/v1/jobs/{job.id}").json()["restore_attempts"]
    queue: dict[str, Any] | None = attempt["queue"]
    return queue


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_it_shows_position_and_times_that_move_as_attempts_finish(settings: Settings) -> None:
    settings.QUEUE_ESTIMATE_CACHE_SECONDS = 0
    now = timezone.now()
    # History: 3 restores finished in the window, 40 s each.
    for minutes in (3, 6, 9):
        end = now - timedelta(minutes=minutes)
        RestoreAttemptFactory.create(succeeded=True, started_at=end - timedelta(seconds=40), finished_at=end)
    waiting = [RestoreAttemptFactory.create(queued_at=now - timedelta(seconds=30 - i)) for i in range(3)]
    last = waiting[-1]

    before = _queue_of(last.job)
    assert before is not None
    assert before["position"] == 3
    start, finish = _moment(before["estimated_start"]), _moment(before["estimated_finish"])
    assert finish - start == timedelta(seconds=40)
    assert start > now

    # The first one runs and finishes: one fewer ahead, and a fourth completion in the window.
    first = waiting[0]
    RestoreAttempt.objects.filter(pk=first.pk).update(
        status=AttemptStatus.SUCCEEDED, started_at=timezone.now() - timedelta(seconds=40), finished_at=timezone.now()
    )
    after = _queue_of(last.job)
    assert after is not None
    assert after["position"] == 2
    assert _moment(after["estimated_start"]) < start
    assert _queue_of(first.job) is None  # not queued: no estimate


def test_it_reads_queued_attempts_without_a_query_per_attempt(settings: Settings) -> None:
    settings.QUEUE_ESTIMATE_CACHE_SECONDS = 0  # measured afresh for each answer, once
    one, three = JobFactory.create(), JobFactory.create()
    RestoreAttemptFactory.create(job=one)
    RestoreAttemptFactory.create_batch(3, job=three)

    counts = []
    for job in (one, three):
        with CaptureQueriesContext(connection) as queries:
            response = client_for(job).get(f"/api/v1/jobs/{job.id}")
        assert response.status_code == 200
        assert all(attempt["queue"] is not None for attempt in response.json()["restore_attempts"])
        counts.append(len(queries.captured_queries))

    assert counts[0] == counts[1]
