"""A job deleted in the last moments of its restore keeps nothing in S3, whenever the delete lands."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from django.db import connection
from rest_framework.test import APIClient

from jobs.models import FileCleanup, Job
from jobs.services import job_delete
from rekindle import storage
from rekindle.testing.comfyui_fixtures import StandinNode
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, jpeg_bytes
from rekindle.testing.pipeline import wait_for
from rekindle.testing.s3 import S3Bucket
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_process
from restoration.tests.test_process_restoration import SMALL, ScriptedEngine

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cleanup_worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    """Runs the delete's ``cleanup_job_s3_files`` message while the restore is still in the test's thread."""
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def delete_and_clean(job_id: Any, worker: dramatiq.Worker) -> None:
    """What DELETE /api/v1/jobs/{id} does, with its cleanup run to the end before the restore goes on."""
    job_delete(job=Job.objects.get(pk=job_id))
    broker: Any = worker.broker
    broker.join("default", fail_fast=True)
    worker.join()


def job_keys(job_id: Any, bucket: S3Bucket) -> list[str]:
    return [key for prefix in storage.job_prefixes(job_id) for key in bucket.keys(prefix)]


def test_it_stores_nothing_when_the_delete_lands_between_the_result_and_the_store(
    s3_bucket: S3Bucket, cleanup_worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    job_id = attempt.job_id

    def finish_after_the_delete(request: Any, on_progress: Any, should_cancel: Any) -> bytes:
        delete_and_clean(job_id, cleanup_worker)
        return jpeg_bytes()

    engine = ScriptedEngine(finish_after_the_delete)
    monkeypatch.setattr("jobs.runner.get_engine", lambda name=None: engine)

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "canceled"

    assert len(engine.runs) == 1
    assert job_keys(job_id, s3_bucket) == []
    assert not RestoreAttempt.objects.filter(pk=attempt.pk).exists()
    assert not FileCleanup.objects.filter(job_id=job_id).exists()


def test_it_removes_its_result_when_the_delete_lands_while_the_result_is_written(
    s3_bucket: S3Bucket, cleanup_worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim was still held when the store began; the delete and its cleanup finish before the write."""
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    job_id = attempt.job_id
    engine = ScriptedEngine(lambda request, on_progress, should_cancel: jpeg_bytes())
    monkeypatch.setattr("jobs.runner.get_engine", lambda name=None: engine)
    real_put = storage.put
    written: list[str] = []

    def put_after_the_delete(key: str, content: Any, *, content_type: str | None = None) -> str:
        if key.startswith("restored/") and not written:
            delete_and_clean(job_id, cleanup_worker)
            assert job_keys(job_id, s3_bucket) == []
        written.append(key)
        return real_put(key, content, content_type=content_type)

    monkeypatch.setattr(storage, "put", put_after_the_delete)

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "lost"

    assert [key.split("/")[0] for key in written] == ["restored"]
    assert job_keys(job_id, s3_bucket) == []
    assert not FileCleanup.objects.filter(job_id=job_id).exists()


def test_it_owes_the_cleanup_when_storage_refuses_to_remove_the_late_result(
    s3_bucket: S3Bucket,
    cleanup_worker: dramatiq.Worker,
    monkeypatch: pytest.MonkeyPatch,
    stub_broker: Any,
    stub_worker_factory: Callable[..., dramatiq.Worker],
) -> None:
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    job_id = attempt.job_id
    engine = ScriptedEngine(lambda request, on_progress, should_cancel: jpeg_bytes())
    monkeypatch.setattr("jobs.runner.get_engine", lambda name=None: engine)
    real_put = storage.put

    def put_after_the_delete(key: str, content: Any, *, content_type: str | None = None) -> str:
        if key.startswith("restored/"):
            delete_and_clean(job_id, cleanup_worker)
            cleanup_worker.stop()  # the owed cleanup's message waits on the queue for the test to run it

            def refuse(keys: Any) -> int:
                raise OSError("S3 is unreachable")

            monkeypatch.setattr(storage, "delete_keys", refuse)
        return real_put(key, content, content_type=content_type)

    monkeypatch.setattr(storage, "put", put_after_the_delete)

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "lost"

    assert len(job_keys(job_id, s3_bucket)) == 1
    assert FileCleanup.objects.filter(job_id=job_id).count() == 1
    monkeypatch.undo()
    worker = stub_worker_factory(worker_timeout=50, worker_threads=1)
    stub_broker.join("default", fail_fast=True)
    worker.join()
    assert job_keys(job_id, s3_bucket) == []
    assert not FileCleanup.objects.filter(job_id=job_id).exists()


def test_it_interrupts_the_run_on_its_node_when_the_job_is_deleted(
    comfy_settings: list[StandinNode],
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    stub_broker: Any,
) -> None:
    """The delete itself stops the prompt: the worker's own checks (status, lease) are held off here, so only it can."""
    monkeypatch.setattr("jobs.runner.PROGRESS_INTERVAL", 3600.0)
    settings.LEASE_SECONDS = 3600
    for node in comfy_settings:
        node.set_faults(sampler_seconds=8.0)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True), parameters=SMALL)
    outcome: list[str] = []

    def process() -> None:
        try:
            outcome.append(restore_attempt_process(attempt_id=str(attempt.pk)))
        finally:
            connection.close()

    worker = threading.Thread(target=process)
    worker.start()
    running = wait_for(
        lambda: RestoreAttempt.objects.filter(pk=attempt.pk).exclude(prompt_id="").first(),
        timeout=60,
        what="the prompt to reach its node",
    )
    node = next(node for node in comfy_settings if node.url == running.node)
    wait_for(
        lambda: any(e["event"] == "started" and e["prompt_id"] == running.prompt_id for e in node.prompt_record()),
        timeout=30,
        what="the prompt to start on the node",
    )

    response = APIClient().delete(f"/api/v1/jobs/{attempt.job_id}", headers={"X-Job-Token": attempt.job.token})  # type: ignore[attr-defined]
    assert response.status_code == 204
    worker.join(60)

    assert not worker.is_alive()
    assert outcome == ["canceled"]
    assert node.counters()["interrupts"] >= 1
    ends = [e for e in node.prompt_record() if e["prompt_id"] == running.prompt_id and e["event"] == "ended"]
    assert [e["how"] for e in ends] == ["interrupted"]
    assert s3_bucket.keys(f"restored/{attempt.job_id}/") == []
