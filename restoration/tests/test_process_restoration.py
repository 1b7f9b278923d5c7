"""process_restoration on the stub broker with the local CPU engine: results, selection, errors, cancel, lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from django.core import mail
from django.utils import timezone
from PIL import Image

from jobs.attempts import attempt_cancel, attempt_timestamp_id
from jobs.models import AttemptStatus, Job
from jobs.runner import AttemptRetry
from rekindle import storage
from rekindle.engines.base import (
    EngineCanceled,
    EngineOutput,
    EngineResult,
    PermanentEngineError,
    RunRequest,
    TransientEngineError,
)
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, jpeg_bytes
from rekindle.testing.postgres import end_every_other_database_session, end_this_threads_database_session
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_create, restore_attempt_process
from restoration.tasks import process_restoration

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"megapixels": 0.25, "seed": 7}


@pytest.fixture
def worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def drain(worker: dramatiq.Worker) -> None:
    broker: Any = worker.broker
    broker.join("interactive", fail_fast=True)
    # The ready email goes out from its own actor, on the default queue.
    broker.join("default", fail_fast=True)
    worker.join()


class ScriptedEngine:
    """An engine standing in for a GPU node: runs ``script(request, on_progress, should_cancel)``."""

    name = "scripted"

    def __init__(self, script: Any) -> None:
        self.script = script
        self.runs: list[RunRequest] = []

    def run(
        self, request: RunRequest, *, on_progress=None, should_cancel=None, on_submitted=None, hooks=None
    ) -> EngineResult:
        self.runs.append(request)
        if on_submitted is not None:
            on_submitted("node-a", f"prompt-{request.run_id}")
        data = self.script(request, on_progress, should_cancel)
        output = EngineOutput(filename="out.png", data=data, kind="image", content_type="image/png")
        return EngineResult(outputs=(output,), engine=self.name, node="node-a", prompt_id=f"prompt-{request.run_id}")

    def health(self) -> list[Any]:
        return []

    def cancel(self, node: str, prompt_id: str) -> None:
        pass


@pytest.fixture
def use_engine(monkeypatch: pytest.MonkeyPatch):
    def install(script: Any) -> ScriptedEngine:
        engine = ScriptedEngine(script)
        monkeypatch.setattr("jobs.runner.get_engine", lambda name=None: engine)
        return engine

    return install


def test_it_restores_stores_the_result_at_its_key_and_selects_it(worker: dramatiq.Worker) -> None:
    job = JobFactory.create(stored_original=True)

    attempt = restore_attempt_create(job=job, params=SMALL)
    drain(worker)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED, attempt.error_message
    assert attempt.result_key == f"restored/{job.id}/{attempt_timestamp_id(attempt)}.jpg"
    assert (attempt.engine, attempt.progress, attempt.tries) == ("local", 100, 1)
    with storage.storage().open(attempt.result_key, "rb") as handle:
        assert Image.open(handle).format == "JPEG"
    job.refresh_from_db()
    assert job.selected_restore_id == attempt.pk
    assert len(mail.outbox) == 1
    assert "is ready" in mail.outbox[0].subject
    assert f"/j/{job.id}?access=" in mail.outbox[0].body


def test_it_does_nothing_for_a_message_delivered_twice(worker: dramatiq.Worker) -> None:
    job = JobFactory.create(stored_original=True)
    attempt = restore_attempt_create(job=job, params=SMALL)
    drain(worker)

    process_restoration.send(str(attempt.pk))
    drain(worker)

    attempt.refresh_from_db()
    assert attempt.tries == 1
    assert storage.list_keys(f"restored/{job.id}/") == [attempt.result_key]
    assert len(mail.outbox) == 1


def test_it_keeps_the_selected_restore_the_person_picked(worker: dramatiq.Worker) -> None:
    job = JobFactory.create(stored_original=True)
    picked = RestoreAttemptFactory.create(job=job, succeeded=True)
    Job.objects.filter(pk=job.pk).update(selected_restore=picked)

    restore_attempt_create(job=job, params=SMALL)
    drain(worker)

    job.refresh_from_db()
    assert job.selected_restore_id == picked.pk


def test_it_fails_at_once_on_a_permanent_error(worker: dramatiq.Worker, use_engine) -> None:
    def reject(request, on_progress, should_cancel):
        raise PermanentEngineError("prompt_rejected", "Node 12 (KSampler): value not in list")

    engine = use_engine(reject)
    job = JobFactory.create(stored_original=True)

    attempt = restore_attempt_create(job=job, params=SMALL)
    drain(worker)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.FAILED
    assert (attempt.error_type, attempt.error_message) == ("prompt_rejected", "Node 12 (KSampler): value not in list")
    assert attempt.tries == 1
    assert len(engine.runs) == 1
    assert len(mail.outbox) == 1


def test_it_fails_stored_parameters_the_workflow_no_longer_accepts() -> None:
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True), parameters={"megapixels": 99})

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "failed"

    attempt.refresh_from_db()
    assert attempt.error_type == "invalid_parameters"


def test_it_retries_a_transient_error_until_its_tries_are_spent(settings, use_engine) -> None:
    settings.MAX_TRIES = 2

    def node_down(request, on_progress, should_cancel):
        raise TransientEngineError("node_unavailable", "No ComfyUI node answered.")

    engine = use_engine(node_down)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))

    with pytest.raises(AttemptRetry):
        restore_attempt_process(attempt_id=str(attempt.pk))
    attempt.refresh_from_db()
    assert (attempt.status, attempt.error_type, attempt.tries) == (AttemptStatus.QUEUED, "node_unavailable", 1)

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "failed"
    attempt.refresh_from_db()
    assert (attempt.status, attempt.error_type, attempt.tries) == (AttemptStatus.FAILED, "node_unavailable", 2)
    assert [run.run_id for run in engine.runs] == [f"{attempt.pk}-run1", f"{attempt.pk}-run2"]


def test_it_stops_a_run_that_is_canceled_meanwhile(use_engine) -> None:
    started = threading.Event()

    def wait_for_cancel(request, on_progress, should_cancel):
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if should_cancel():
                raise EngineCanceled("interrupted", "Interrupted on node-a.")
            time.sleep(0.05)
        return jpeg_bytes()

    use_engine(wait_for_cancel)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(restore_attempt_process(attempt_id=str(attempt.pk))))
    thread.start()
    assert started.wait(5)

    assert attempt_cancel(RestoreAttempt.objects.get(pk=attempt.pk))
    thread.join(10)

    assert outcome == ["canceled"]
    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.CANCELED
    assert attempt.node == "node-a"
    assert storage.list_keys(f"restored/{attempt.job_id}/") == []


def test_it_renews_the_lease_and_writes_progress_while_the_engine_runs(settings, use_engine) -> None:
    settings.LEASE_SECONDS = 3
    seen: list[tuple[int, Any]] = []

    def slow(request, on_progress, should_cancel):
        for step in range(1, 6):
            on_progress(step * 15)
            time.sleep(0.6)
            row = RestoreAttempt.objects.values("progress", "lease_expires_at").get(pk=attempt.pk)
            seen.append((row["progress"], row["lease_expires_at"]))
        return jpeg_bytes()

    use_engine(slow)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    first_lease = timezone.now()

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    assert any(0 < progress < 100 for progress, _ in seen)
    leases = [lease for _, lease in seen]
    assert leases[-1] > leases[0] > first_lease


@pytest.mark.postgres
def test_the_heartbeat_renews_the_lease_again_after_the_database_ended_its_session(settings, use_engine) -> None:
    settings.LEASE_SECONDS = 3
    leases: list[Any] = []

    def lease() -> Any:
        return RestoreAttempt.objects.values_list("lease_expires_at", flat=True).get(pk=attempt.pk)

    def database_restarts_mid_run(request, on_progress, should_cancel):
        time.sleep(1.5)  # the heartbeat has its connection by now
        end_every_other_database_session()
        leases.append(lease())
        time.sleep(3.5)  # more than two renewals
        leases.append(lease())
        return jpeg_bytes()

    use_engine(database_restarts_mid_run)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    at_restart, later = leases
    assert later > at_restart


@pytest.mark.postgres
def test_it_keeps_a_result_whose_final_write_met_a_lost_connection(worker: dramatiq.Worker, use_engine) -> None:
    def finish_as_the_database_restarts(request, on_progress, should_cancel):
        end_this_threads_database_session()
        return jpeg_bytes()

    use_engine(finish_as_the_database_restarts)
    job = JobFactory.create(stored_original=True)

    attempt = restore_attempt_create(job=job, params=SMALL)
    drain(worker)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED, attempt.error_message
    assert attempt.tries == 1
    assert storage.list_keys(f"restored/{job.id}/") == [attempt.result_key]
