"""Work that misses the broker while its Redis is down moves once Redis is back: attempts, retries, file cleanups.

Each test runs a redis-server of its own on a free port and stops it (never the machine's shared one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.management.commands.requeue_stuck_attempts import Command as RequeueStuckAttempts
from jobs.models import AttemptStatus, FileCleanup, Job
from rekindle import storage
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.pipeline import BrokerSwap, RedisServer, WorkerProcess, make_redis_broker, wait_for
from restoration.models import RestoreAttempt

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}


class OwnBroker:
    """The test process's broker on a redis-server of the test's own, which the test stops and starts."""

    def __init__(self, namespace: str) -> None:
        self.redis = RedisServer().start()
        self.broker = make_redis_broker(self.redis.url, namespace)
        self.swap = BrokerSwap(self.broker)

    def close(self) -> None:
        self.swap.restore()
        self.broker.close()
        self.redis.stop()


@pytest.fixture
def own_broker(redis_namespace: str) -> Iterator[OwnBroker]:
    broker = OwnBroker(redis_namespace)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def settings_on_own_redis(settings: Any, own_broker: OwnBroker) -> Any:
    """The web side's Redis (live events) on the test's own server too, so it is really down when stopped."""
    settings.REDIS_URL = own_broker.redis.url
    return settings


def job_keys(job_id: Any, bucket: Any) -> list[str]:
    return [key for prefix in storage.job_prefixes(job_id) for key in bucket.keys(prefix)]


def run_round(command: RequeueStuckAttempts) -> None:
    command.round_started()
    while command.handle_one():
        pass


def test_it_deletes_a_job_while_redis_is_down_and_removes_its_files_once_redis_is_back(
    own_broker: OwnBroker, settings_on_own_redis: Any, worker_env: dict[str, str], s3_bucket: Any
) -> None:
    job = JobFactory.create(stored_original=True)
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    storage.put(restore.result_key, b"restored photo")
    assert len(job_keys(job.id, s3_bucket)) == 2
    own_broker.redis.stop()

    response = APIClient().delete(f"/api/v1/jobs/{job.id}", headers={"X-Job-Token": job.token})  # type: ignore[attr-defined]

    assert response.status_code == 204
    assert not Job.objects.filter(pk=job.pk).exists()
    [owed] = FileCleanup.objects.filter(job_id=job.id)
    assert (owed.last_enqueued_at, owed.attempts) == (None, 0)
    command = RequeueStuckAttempts()
    run_round(command)
    assert "file cleanups resent 0, 1 not sent (broker unreachable)" in command.summary()
    assert FileCleanup.objects.get(pk=owed.pk).last_enqueued_at is None

    own_broker.redis.start()
    worker = WorkerProcess({**worker_env, "REDIS_URL": own_broker.redis.url}).start()
    try:
        command = RequeueStuckAttempts()
        run_round(command)
        assert command.actions["cleanups_resent"] == 1
        wait_for(lambda: not job_keys(job.id, s3_bucket), timeout=60, what="the deleted job's files to go")
        wait_for(lambda: not FileCleanup.objects.filter(job_id=job.id).exists(), timeout=30, what="the outbox row")
    finally:
        worker.stop()


def test_it_counts_resends_the_broker_refused_as_not_sent_and_sends_them_once_it_is_back(
    own_broker: OwnBroker,
) -> None:
    attempts = [RestoreAttemptFactory.create(last_enqueued_at=None) for _ in range(3)]
    own_broker.redis.stop()

    command = RequeueStuckAttempts()
    run_round(command)

    assert command.summary() == "requeued 0, resent 0, failed 0 attempt(s); 1 not sent (broker unreachable)"
    assert list(RestoreAttempt.objects.values_list("last_enqueued_at", flat=True)) == [None] * 3

    own_broker.redis.start()
    command = RequeueStuckAttempts()
    run_round(command)

    assert command.summary() == "requeued 0, resent 3, failed 0 attempt(s)"
    assert all(RestoreAttempt.objects.filter(pk=a.pk, last_enqueued_at__isnull=False).exists() for a in attempts)
    assert own_broker.broker.client.llen(f"{own_broker.broker.namespace}:interactive") == 3


def test_it_runs_a_retry_whose_delayed_message_redis_lost_as_soon_as_redis_is_back(
    own_broker: OwnBroker, worker_env: dict[str, str], comfy_settings: list[Any], s3_bucket: Any
) -> None:
    node = comfy_settings[0]
    node.set_faults(oom=1)
    # A long backoff: the retry's delayed message is still waiting when Redis goes away with it.
    worker = WorkerProcess(
        {
            **worker_env,
            "REDIS_URL": own_broker.redis.url,
            "COMFYUI_URLS": node.url,
            "RETRY_MIN_BACKOFF_MS": "600000",
            "RETRY_MAX_BACKOFF_MS": "600000",
        }
    ).start()
    try:
        job = JobFactory.create(stored_original=True)
        response = APIClient().post(
            f"/api/v1/jobs/{job.id}/restore",
            {"parameters": SMALL_RESTORE},
            format="json",
            headers={"X-Job-Token": job.token},  # type: ignore[attr-defined]
        )
        assert response.status_code == 202
        attempt_id = response.json()["id"]
        waiting = wait_for(
            lambda: RestoreAttempt.objects.filter(pk=attempt_id, status=AttemptStatus.QUEUED, tries=1).first(),
            timeout=60,
            what="the first try to fail out of memory",
        )
        assert waiting.error_type == "out_of_memory"
        assert waiting.next_try_at is not None
        assert waiting.next_try_at > timezone.now()

        own_broker.redis.stop()
        own_broker.redis.start()
        command = RequeueStuckAttempts()
        run_round(command)
        assert command.actions["resent"] == 1

        done = wait_for(
            lambda: RestoreAttempt.objects.filter(pk=attempt_id, status=AttemptStatus.SUCCEEDED).first(),
            timeout=90,
            what="the retry to run once Redis is back",
        )
        assert done.tries == 2
        assert s3_bucket.keys(f"restored/{job.id}/") == [done.result_key]
    finally:
        worker.stop()
