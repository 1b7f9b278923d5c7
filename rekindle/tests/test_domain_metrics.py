"""The service's own metrics move where things happen: attempt moves, engine and storage errors, throttles, webhooks.

Read from prometheus_client's registry of this process (one process: the multiprocess path is
``test_ops_metrics``), as differences, since other tests count too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from billing.tests.test_webhooks import Payments
from jobs.runner import AttemptRetry
from rekindle.engines.base import PermanentEngineError, TransientEngineError
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.stripe_stub import StripeStub, WebhookSender
from restoration.services import restore_attempt_create, restore_attempt_process
from restoration.tests.test_process_restoration import ScriptedEngine


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counted:
    """The values of some samples now, and how much each moved since."""

    def __init__(self, **samples: tuple[str, dict[str, str]]) -> None:
        self.samples = samples
        self.before = {key: sample(name, **labels) for key, (name, labels) in samples.items()}

    def moved(self) -> dict[str, float]:
        return {key: sample(name, **labels) - self.before[key] for key, (name, labels) in self.samples.items()}


@pytest.fixture
def use_engine(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], ScriptedEngine]:
    def install(script: Any) -> ScriptedEngine:
        engine = ScriptedEngine(script)
        monkeypatch.setattr("jobs.runner.get_engine", lambda name=None: engine)
        return engine

    return install


def transitions(status: str) -> tuple[str, dict[str, str]]:
    return "rekindle_attempt_transitions_total", {"kind": "restore", "status": status}


@pytest.mark.django_db(transaction=True)
def test_it_counts_each_move_and_error_of_an_attempt(settings: Any, use_engine: Callable[[Any], Any]) -> None:
    settings.MAX_TRIES = 2
    errors = iter(
        [
            TransientEngineError("node_unavailable", "No ComfyUI node answered."),
            PermanentEngineError("prompt_rejected", "Node 12: value not in list"),
        ]
    )

    def failing(request: Any, on_progress: Any, should_cancel: Any) -> bytes:
        raise next(errors)

    use_engine(failing)
    counted = Counted(
        queued=transitions("queued"),
        running=transitions("running"),
        failed=transitions("failed"),
        transient=(
            "rekindle_engine_errors_total",
            {"kind": "restore", "error_type": "node_unavailable", "category": "transient"},
        ),
        permanent=(
            "rekindle_engine_errors_total",
            {"kind": "restore", "error_type": "prompt_rejected", "category": "permanent"},
        ),
        waits=("rekindle_attempt_queue_wait_seconds_count", {"kind": "restore"}),
        retried=("rekindle_attempt_execution_seconds_count", {"kind": "restore", "outcome": "retry"}),
        ended=("rekindle_attempt_total_seconds_count", {"kind": "restore", "status": "failed"}),
    )
    attempt = restore_attempt_create(job=JobFactory.create(stored_original=True), params={})
    with pytest.raises(AttemptRetry):
        restore_attempt_process(attempt_id=str(attempt.pk))
    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "failed"

    assert counted.moved() == {
        "queued": 2,  # asked for, then back after the transient error
        "running": 2,
        "failed": 1,
        "transient": 1,
        "permanent": 1,
        "waits": 2,
        "retried": 1,
        "ended": 1,
    }


@pytest.mark.django_db(transaction=True)
def test_it_counts_a_storage_failure_of_a_run_as_an_s3_error(use_engine: Callable[[Any], Any]) -> None:
    def storage_down(request: Any, on_progress: Any, should_cancel: Any) -> bytes:
        answer: Any = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
        raise ClientError(answer, "PutObject")

    use_engine(storage_down)
    counted = Counted(s3=("rekindle_storage_errors_total", {"where": "worker", "error_type": "storage_unavailable"}))
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    with pytest.raises(AttemptRetry):
        restore_attempt_process(attempt_id=str(attempt.pk))
    assert counted.moved() == {"s3": 1}


@pytest.mark.django_db(transaction=True)
def test_it_counts_throttle_refusals_by_scope(settings: Any, jpeg_upload: Any) -> None:
    settings.THROTTLE_RATES = {**dict.fromkeys(settings.THROTTLE_RATES), "upload_ip": "1/hour"}
    counted = Counted(refused=("rekindle_throttle_refusals_total", {"scope": "upload", "identity": "ip"}))
    client = APIClient()
    assert client.post("/api/v1/jobs/upload", {"email": "a@example.com", "image": jpeg_upload}).status_code == 201
    jpeg_upload.seek(0)
    assert client.post("/api/v1/jobs/upload", {"email": "a@example.com", "image": jpeg_upload}).status_code == 429
    assert counted.moved() == {"refused": 1}


@pytest.fixture
def payments(
    stripe_stub: StripeStub, stripe_webhooks: WebhookSender, queued: Any, django_capture_on_commit_callbacks: Any
) -> Payments:
    return Payments(stripe_stub, stripe_webhooks, queued, django_capture_on_commit_callbacks)


@pytest.mark.django_db
def test_it_counts_webhook_events_by_type_and_outcome(payments: Payments) -> None:
    completed = "checkout.session.completed"
    counted = Counted(
        applied=("rekindle_webhook_events_total", {"event_type": completed, "outcome": "applied"}),
        forged=("rekindle_webhook_events_total", {"event_type": "unverified", "outcome": "bad_signature"}),
    )
    event = payments.deliver(completed, payments.stub.pay(payments.session_id))
    payments.send(event)  # dj-stripe knows it: nothing applied again
    forged = payments.webhooks.post("{}", signature="t=1,v1=00")
    assert forged.status_code == 400
    assert counted.moved() == {"applied": 1, "forged": 1}
