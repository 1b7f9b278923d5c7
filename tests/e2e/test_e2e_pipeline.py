"""The pipelines end to end on real parts: API -> Redis -> a rundramatiq worker process -> ComfyUI stand-ins -> S3.

PostgreSQL is pytest's test database (transactional tests, so the worker sees committed
rows), Redis is the machine's under a namespace of this test's own (or a redis-server of the
test's own where it stops Redis), S3 is moto's server, the engine is the ComfyUI pool over
two stand-in processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from animation.models import AnimationAttempt, HDAttempt
from animation.services import hd_result_generate
from jobs.attempts import attempt_timestamp_id
from jobs.management.commands.requeue_stuck_attempts import Command as RequeueStuckAttempts
from jobs.models import AttemptStatus, Job
from rekindle.testing.factories import JobFactory
from rekindle.testing.pipeline import BrokerSwap, RedisServer, WorkerProcess, make_redis_broker, wait_for
from restoration.models import RestoreAttempt
from restoration.tasks import process_restoration

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
SMALL_ANIMATION = {"seconds": 1, "fps": 8, "width": 256, "height": 256}


def client_for(job: Job, token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_JOB_TOKEN=token)
    return client


def restore_finished(attempt_id: str) -> RestoreAttempt | None:
    attempt = RestoreAttempt.objects.get(pk=attempt_id)
    return attempt if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED) else None


def test_it_restores_animates_makes_hd_and_deletes_through_the_real_parts(
    redis_broker: Any, pipeline_worker: Callable[..., WorkerProcess], s3_bucket: Any, jpeg_upload: Any
) -> None:
    worker = pipeline_worker()

    uploaded = APIClient().post(
        "/api/v1/jobs/upload", {"image": jpeg_upload, "email": "family@example.com", "restore": "true"}
    )
    assert uploaded.status_code == 201, uploaded.json()
    body = uploaded.json()
    job_id, client = body["id"], client_for(Job.objects.get(pk=body["id"]), body["token"])
    restore = wait_for(lambda: restore_finished(body["restore_attempts"][0]["id"]), what="the restore")

    assert restore.status == AttemptStatus.SUCCEEDED, restore.error_message
    assert restore.result_key == f"restored/{job_id}/{attempt_timestamp_id(restore)}.jpg"
    assert s3_bucket.keys(f"restored/{job_id}/") == [restore.result_key]
    assert s3_bucket.get(restore.result_key)[:3] == b"\xff\xd8\xff"
    assert restore.engine == "comfyui"
    assert restore.node.startswith("http://127.0.0.1:")
    assert Job.objects.get(pk=job_id).selected_restore_id == restore.pk
    emails = wait_for(worker.emails, what="the ready email")
    assert [(m["To"], m["Subject"]) for m in emails] == [("family@example.com", "Your restored photo is ready")]
    shown = client.get(f"/api/v1/jobs/{job_id}").json()["restore_attempts"][0]
    assert (shown["status"], shown["progress"], shown["tries"]) == ("succeeded", 100, 1)
    assert shown["result_url"].startswith(s3_bucket.server.endpoint_url)

    animated = client.post(f"/api/v1/jobs/{job_id}/animate", {"parameters": SMALL_ANIMATION}, format="json")
    assert animated.status_code == 202, animated.json()
    animation = wait_for(
        lambda: AnimationAttempt.objects.filter(pk=animated.json()["id"], status=AttemptStatus.SUCCEEDED).first(),
        what="the animation",
    )
    ts = attempt_timestamp_id(animation)
    assert s3_bucket.keys(f"animated/{job_id}/") == [f"animated/{job_id}/{ts}_preview.mp4"]
    assert s3_bucket.keys(f"thumbnails/{job_id}/") == [f"thumbnails/{job_id}/{ts}.jpg"]
    assert s3_bucket.get(animation.preview_key)[4:8] == b"ftyp"
    assert Job.objects.get(pk=job_id).latest_animation_id == animation.pk

    assert hd_result_generate(animation=animation)
    wait_for(
        lambda: HDAttempt.objects.filter(animation=animation, status=AttemptStatus.SUCCEEDED).exists(),
        what="the HD result",
    )
    assert s3_bucket.keys(f"animated/{job_id}/") == [
        f"animated/{job_id}/{ts}_preview.mp4",
        f"animated/{job_id}/{ts}_result.mp4",
    ]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["animation_attempts"][0]["hd_result_url"]

    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    prefixes = [f"processed/{job_id}.", f"restored/{job_id}/", f"animated/{job_id}/", f"thumbnails/{job_id}/"]
    wait_for(lambda: not any(s3_bucket.keys(prefix) for prefix in prefixes), what="the job's files to go")


def test_it_runs_every_attempt_once_after_the_worker_is_killed_mid_run(
    redis_broker: Any,
    pipeline_worker: Callable[..., WorkerProcess],
    s3_bucket: Any,
    comfy_settings: list[Any],
) -> None:
    for node in comfy_settings:
        # Long enough that no run ends before the tenth is claimed, however slowly a loaded machine sends them.
        node.set_faults(sampler_seconds=5.0)
    worker = pipeline_worker(threads=10, LEASE_SECONDS="3")
    attempt_ids = []
    for _ in range(10):
        job = JobFactory.create(stored_original=True)
        response = client_for(job, job.token).post(  # type: ignore[attr-defined]
            f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json"
        )
        assert response.status_code == 202
        attempt_ids.append(response.json()["id"])
    running = RestoreAttempt.objects.filter(pk__in=attempt_ids, status=AttemptStatus.RUNNING)
    wait_for(lambda: running.count() == 10, what="all 10 attempts to run")

    worker.kill()
    # Leases run out once no heartbeat renews them; then the command puts them back.
    wait_for(lambda: running.filter(lease_expires_at__gt=timezone.now()).count() == 0, timeout=10, what="the leases")
    command = RequeueStuckAttempts()
    while command.handle_one():
        pass
    # The killed worker ran on this host, so the command sees its process is gone and takes them back as such.
    assert command.actions["taken back"] == 10
    for node in comfy_settings:
        node.set_faults(sampler_seconds=0.05)
    pipeline_worker(threads=4, LEASE_SECONDS="3")

    done = RestoreAttempt.objects.filter(pk__in=attempt_ids, status=AttemptStatus.SUCCEEDED)
    wait_for(lambda: done.count() == 10, timeout=120, what="all 10 attempts to succeed")
    for attempt in done:
        assert s3_bucket.keys(f"restored/{attempt.job_id}/") == [attempt.result_key]
        assert attempt.tries == 2


def test_it_runs_a_message_delivered_twice_once(
    redis_broker: Any, pipeline_worker: Callable[..., WorkerProcess], s3_bucket: Any, comfy_settings: list[Any]
) -> None:
    job = JobFactory.create(stored_original=True)
    response = client_for(job, job.token).post(  # type: ignore[attr-defined]
        f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json"
    )
    attempt_id = response.json()["id"]
    process_restoration.send(attempt_id)  # the same message again, before any worker runs
    worker = pipeline_worker()

    attempt = wait_for(lambda: restore_finished(attempt_id), what="the restore")
    # Both messages are consumed; the second finds the attempt claimed and does nothing.
    wait_for(lambda: redis_broker.client.hlen(f"{redis_broker.namespace}:restoration.msgs") == 0, what="the queue")

    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.tries == 1
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]
    assert sum(node.counters().get("prompts", 0) for node in comfy_settings) == 1
    assert len(worker.emails()) == 1


def test_it_finishes_on_the_other_node_when_its_node_crashes_mid_run(
    redis_broker: Any, pipeline_worker: Callable[..., WorkerProcess], s3_bucket: Any, comfy_settings: list[Any]
) -> None:
    crashing, healthy = comfy_settings
    crashing.set_faults(crash=1)
    pipeline_worker()
    job = JobFactory.create(stored_original=True)

    response = client_for(job, job.token).post(  # type: ignore[attr-defined]
        f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json"
    )
    attempt = wait_for(lambda: restore_finished(response.json()["id"]), what="the restore")

    assert attempt.status == AttemptStatus.SUCCEEDED, attempt.error_message
    assert not crashing.alive()
    assert attempt.node == healthy.url
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]


def test_it_fails_a_workflow_the_node_rejects_at_once_with_its_message(
    redis_broker: Any, pipeline_worker: Callable[..., WorkerProcess], s3_bucket: Any, comfy_settings: list[Any]
) -> None:
    for node in comfy_settings:
        node.set_faults(reject=-1)
    worker = pipeline_worker()
    job = JobFactory.create(stored_original=True)

    response = client_for(job, job.token).post(  # type: ignore[attr-defined]
        f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json"
    )
    attempt = wait_for(lambda: restore_finished(response.json()["id"]), what="the restore")

    assert attempt.status == AttemptStatus.FAILED
    assert attempt.tries == 1
    assert attempt.error_message
    assert sum(node.counters().get("fault_reject", 0) for node in comfy_settings) == 1
    assert s3_bucket.keys(f"restored/{job.id}/") == []
    emails = wait_for(worker.emails, what="the failure email")
    assert emails[0]["Subject"] == "Your restored photo could not be finished"


def test_it_keeps_a_restore_queued_while_redis_is_down_and_runs_it_once_redis_is_back(
    redis_namespace: str, worker_env: dict[str, str], s3_bucket: Any
) -> None:
    own_redis = RedisServer().start()
    broker = make_redis_broker(own_redis.url, redis_namespace)
    swap = BrokerSwap(broker)
    worker: WorkerProcess | None = None
    try:
        own_redis.stop()
        job = JobFactory.create(stored_original=True)
        response = client_for(job, job.token).post(  # type: ignore[attr-defined]
            f"/api/v1/jobs/{job.id}/restore", {"parameters": SMALL_RESTORE}, format="json"
        )
        assert response.status_code == 202
        attempt = RestoreAttempt.objects.get(pk=response.json()["id"])
        assert (attempt.status, attempt.last_enqueued_at) == (AttemptStatus.QUEUED, None)

        own_redis.start()
        worker = WorkerProcess({**worker_env, "REDIS_URL": own_redis.url}).start()
        command = RequeueStuckAttempts()
        assert command.handle_one()
        assert command.actions["resent"] == 1

        finished = wait_for(lambda: restore_finished(str(attempt.pk)), what="the restore")
        assert finished.status == AttemptStatus.SUCCEEDED, finished.error_message
        assert s3_bucket.keys(f"restored/{job.id}/") == [finished.result_key]
    finally:
        if worker is not None:
            worker.stop()
        swap.restore()
        broker.close()
        own_redis.stop()
