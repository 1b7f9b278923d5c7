"""The attempt lifecycle: claims and their fencing token, leases, retries, requeue, cancel, stuck attempts."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pytest
from django.core import mail
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker

from animation.models import HDAttempt
from jobs import attempts
from jobs.attempts import (
    attempt_cancel,
    attempt_claim,
    attempt_fail,
    attempt_handle_one_stuck,
    attempt_release,
    attempt_renew_lease,
    attempt_requeue,
    attempt_retry_later,
    attempt_send,
    attempt_succeed,
    attempt_timestamp_id,
    tries_left,
)
from jobs.models import AttemptStatus
from rekindle.testing.factories import AnimationAttemptFactory, HDAttemptFactory, RestoreAttemptFactory
from restoration.models import RestoreAttempt
from restoration.tasks import process_restoration

pytestmark = pytest.mark.django_db


def expire_lease(attempt: RestoreAttempt) -> None:
    RestoreAttempt.objects.filter(pk=attempt.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_it_claims_a_queued_attempt_once() -> None:
    attempt = RestoreAttemptFactory.create()

    claimed = attempt_claim(RestoreAttempt, attempt.pk)

    assert claimed is not None
    assert claimed.status == AttemptStatus.RUNNING
    assert claimed.tries == 1
    assert claimed.started_at is not None
    assert claimed.lease_expires_at is not None
    assert claimed.lease_expires_at > timezone.now()
    assert attempt_claim(RestoreAttempt, attempt.pk) is None


def test_it_does_not_claim_a_finished_or_canceled_attempt() -> None:
    for status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELED):
        attempt = RestoreAttemptFactory.create(status=status)
        assert attempt_claim(RestoreAttempt, attempt.pk) is None


def test_it_clears_the_previous_error_on_claim() -> None:
    attempt = RestoreAttemptFactory.create(error_type="node_down", error_message="x", error_details={"a": 1})

    claimed = attempt_claim(RestoreAttempt, attempt.pk)

    assert claimed is not None
    assert (claimed.error_type, claimed.error_message, claimed.error_details) == ("", "", {})


def test_it_refuses_writes_from_a_claim_that_was_taken_over(stub_broker: dramatiq.Broker) -> None:
    attempt = RestoreAttemptFactory.create()
    first = attempt_claim(RestoreAttempt, attempt.pk)
    assert first is not None
    expire_lease(first)
    outcome = attempt_handle_one_stuck(RestoreAttempt)
    assert outcome is not None
    assert outcome.action == "requeued"
    second = attempt_claim(RestoreAttempt, attempt.pk)
    assert second is not None
    assert second.tries == 2

    assert not attempt_renew_lease(first, progress=50)
    assert not attempt_succeed(first, values={"result_key": "restored/old.jpg"})
    assert not attempt_fail(first, error_type="x", message="late")
    assert attempt_succeed(second, values={"result_key": "restored/new.jpg"})

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.result_key == "restored/new.jpg"


def test_it_renews_the_lease_and_records_progress() -> None:
    attempt = RestoreAttemptFactory.create()
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None
    RestoreAttempt.objects.filter(pk=attempt.pk).update(lease_expires_at=timezone.now())

    assert attempt_renew_lease(claimed, progress=42)

    attempt.refresh_from_db()
    assert attempt.progress == 42
    assert attempt.lease_expires_at is not None
    assert attempt.lease_expires_at > timezone.now() + timedelta(seconds=30)


def test_it_puts_a_transient_failure_back_in_the_queue_with_its_error() -> None:
    attempt = RestoreAttemptFactory.create()
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None

    assert attempt_retry_later(claimed, error_type="node_down", message="No node answered.")

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.QUEUED
    assert attempt.error_type == "node_down"
    assert attempt.lease_expires_at is None
    assert tries_left(attempt) == 2  # MAX_TRIES is 3 by default


def test_it_fails_with_the_error_and_emails_once(queued, django_capture_on_commit_callbacks) -> None:
    attempt = RestoreAttemptFactory.create()
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None

    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_fail(claimed, error_type="execution_failed", message="Bad node", details={"node_id": "3"})

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.FAILED
    assert (attempt.error_type, attempt.error_message, attempt.error_details) == (
        "execution_failed",
        "Bad node",
        {"node_id": "3"},
    )
    assert attempt.finished_at is not None
    assert mail.outbox == []  # queued for the mail worker, not sent from the worker running attempts
    assert queued.run_here("default") == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [attempt.job.email]
    assert "could not be finished" in mail.outbox[0].subject


def test_it_sends_the_message_only_after_commit(queued, django_capture_on_commit_callbacks) -> None:
    attempt = RestoreAttemptFactory.create(status=AttemptStatus.FAILED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert attempt_requeue(attempt)
        assert queued.ids("bulk") == []
    for callback in callbacks:
        callback()

    # A requeue is bulk work: it waits behind customers' new runs.
    assert queued.ids("bulk") == [str(attempt.pk)]
    attempt.refresh_from_db()
    assert attempt.last_enqueued_at is not None


def test_it_requeues_a_failed_attempt_on_the_same_row_with_a_fresh_budget(
    queued, django_capture_on_commit_callbacks
) -> None:
    attempt = RestoreAttemptFactory.create(
        status=AttemptStatus.FAILED, tries=3, error_type="node_down", error_message="x"
    )
    assert tries_left(attempt) == 0

    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_requeue(attempt)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.QUEUED
    assert (attempt.tries, attempt.tries_at_requeue, tries_left(attempt)) == (3, 3, 3)
    assert attempt.error_type == ""
    assert RestoreAttempt.objects.count() == 1
    assert queued.ids("bulk") == [str(attempt.pk)]


def test_it_does_not_requeue_a_queued_running_or_succeeded_attempt() -> None:
    running = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, lease_expires_at=timezone.now() + timedelta(hours=1)
    )
    for attempt in (RestoreAttemptFactory.create(), running, RestoreAttemptFactory.create(succeeded=True)):
        assert not attempt_requeue(attempt)


def test_it_requeues_a_running_attempt_whose_lease_ran_out(django_capture_on_commit_callbacks) -> None:
    attempt = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, lease_expires_at=timezone.now() - timedelta(seconds=5)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_requeue(attempt)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.QUEUED


class RecordingEngine:
    name = "recording"

    def __init__(self) -> None:
        self.canceled: list[tuple[str, str]] = []

    def cancel(self, node: str, prompt_id: str) -> None:
        self.canceled.append((node, prompt_id))


def test_it_cancels_a_running_attempt_and_interrupts_it_on_its_node_after_commit(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr("rekindle.engines.get_engine", lambda name=None: engine)
    attempt = RestoreAttemptFactory.create()
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None
    RestoreAttempt.objects.filter(pk=attempt.pk).update(engine="comfyui", node="http://node-a", prompt_id="p-1")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert attempt_cancel(attempt)
        assert engine.canceled == []
    for callback in callbacks:
        callback()

    assert engine.canceled == [("http://node-a", "p-1")]
    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.CANCELED
    # The worker's own late writes are refused.
    assert not attempt_succeed(claimed, values={"result_key": "restored/x.jpg"})
    assert not attempt_cancel(attempt)


def test_it_cancels_a_queued_attempt_without_touching_any_node(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RecordingEngine()
    monkeypatch.setattr("rekindle.engines.get_engine", lambda name=None: engine)
    attempt = RestoreAttemptFactory.create()

    assert attempt_cancel(attempt)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.CANCELED
    assert engine.canceled == []
    assert attempt_claim(RestoreAttempt, attempt.pk) is None


def test_it_fails_a_stuck_attempt_that_has_no_tries_left(queued, django_capture_on_commit_callbacks) -> None:
    attempt = RestoreAttemptFactory.create(status=AttemptStatus.RUNNING, tries=3, lease_expires_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        outcome = attempt_handle_one_stuck(RestoreAttempt)

    assert outcome is not None
    assert outcome.action == "failed"
    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.FAILED
    assert attempt.error_type == "worker_lost"
    assert queued.run_here("default") == 1
    assert len(mail.outbox) == 1


def test_it_resends_a_queued_attempt_that_never_reached_the_broker(queued, django_capture_on_commit_callbacks) -> None:
    never_sent = RestoreAttemptFactory.create(last_enqueued_at=None)
    RestoreAttemptFactory.create(last_enqueued_at=timezone.now())  # sent a moment ago: left alone

    with django_capture_on_commit_callbacks(execute=True):
        outcome = attempt_handle_one_stuck(RestoreAttempt)
        assert attempt_handle_one_stuck(RestoreAttempt) is None

    assert outcome is not None
    assert (outcome.action, outcome.attempt_id) == ("resent", never_sent.pk)
    assert queued.ids("interactive") == [str(never_sent.pk)]


def test_it_swallows_a_broker_that_is_down_and_leaves_the_attempt_queued() -> None:
    attempt = RestoreAttemptFactory.create()
    broker = dramatiq.get_broker()
    # A Redis broker on a port nothing listens on: sending fails as it would with Redis down.
    down = RedisBroker(url="redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    process_restoration.broker = down
    try:
        assert not attempt_send(RestoreAttempt, attempt.pk)
    finally:
        process_restoration.broker = broker

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.QUEUED
    assert attempt.last_enqueued_at is None


def test_it_derives_one_timestamp_id_per_attempt() -> None:
    attempt = RestoreAttemptFactory.create()
    again = RestoreAttempt.objects.get(pk=attempt.pk)

    assert attempt_timestamp_id(attempt) == attempt_timestamp_id(again)
    assert attempt_timestamp_id(attempt).endswith(attempt.pk.hex[:4])
    assert attempt_timestamp_id(attempt) != attempt_timestamp_id(RestoreAttemptFactory.create(job=attempt.job))


def test_it_runs_an_hd_attempt_on_its_own_row(queued) -> None:
    hd = HDAttemptFactory.create()
    animation = hd.animation

    claimed = attempt_claim(HDAttempt, hd.pk)
    assert claimed is not None
    assert attempt_succeed(claimed, values={"result_key": "animated/x_result.mp4"})

    hd.refresh_from_db()
    animation.refresh_from_db()
    assert (hd.status, hd.tries, hd.result_key) == (AttemptStatus.SUCCEEDED, 1, "animated/x_result.mp4")
    assert (animation.status, animation.tries) == (AttemptStatus.SUCCEEDED, 0)


def test_it_sends_each_kind_to_its_own_actor(queued, django_capture_on_commit_callbacks) -> None:
    restore = RestoreAttemptFactory.create()
    animation = AnimationAttemptFactory.create()
    hd = HDAttemptFactory.create()

    for attempt in (restore, animation, hd):
        assert attempt_send(type(attempt), attempt.pk)

    assert queued.calls("interactive") == sorted(
        [("process_restoration", str(restore.pk)), ("process_animation", str(animation.pk))]
    )
    assert queued.calls("paid") == [("generate_hd_result", str(hd.pk))]


def test_it_counts_every_kind_in_flight_for_the_job_limit(settings) -> None:
    settings.MAX_ATTEMPTS_IN_FLIGHT = 3
    hd = HDAttemptFactory.create(status=AttemptStatus.RUNNING)
    job = hd.job
    RestoreAttemptFactory.create(job=job)
    AnimationAttemptFactory.create(job=job, status=AttemptStatus.RUNNING)

    assert attempts.job_in_flight_count(job) == 3
    with pytest.raises(attempts.TooManyInFlight):
        attempts.job_lock_for_new_attempt(job)


def test_it_refuses_more_attempts_than_the_job_may_have_in_flight(settings) -> None:
    settings.MAX_ATTEMPTS_IN_FLIGHT = 2
    first = RestoreAttemptFactory.create()
    RestoreAttemptFactory.create(job=first.job, status=AttemptStatus.RUNNING)
    RestoreAttemptFactory.create(job=first.job, status=AttemptStatus.FAILED)

    with pytest.raises(attempts.TooManyInFlight):
        attempts.job_lock_for_new_attempt(first.job)


def test_it_hands_a_run_back_for_a_stopping_worker_without_spending_a_try(
    queued, django_capture_on_commit_callbacks
) -> None:
    attempt = RestoreAttemptFactory.create()
    claimed = attempt_claim(RestoreAttempt, attempt.pk)
    assert claimed is not None

    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_release(claimed)

    attempt.refresh_from_db()
    # The try is given back; the fencing token keeps counting.
    assert (attempt.status, attempt.tries, attempt.lease_expires_at) == (AttemptStatus.QUEUED, 1, None)
    assert tries_left(attempt) == 3
    assert queued.ids("interactive") == [str(attempt.pk)]  # sent again at once, to its own queue
    assert not attempt_release(claimed)  # the claim is gone
