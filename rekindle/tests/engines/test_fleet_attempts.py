"""The fleet seen from an attempt: an outage of every node is a wait with the tries unspent, overflow is recorded
with its reason, every try's GPU time is counted, and what ran is labelled for what it was."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from jobs.models import AttemptStatus
from rekindle.engines import engine_label
from rekindle.engines.comfyui import get_pool
from rekindle.testing.comfyui_fixtures import StandinNode
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.pipeline import wait_for
from rekindle.testing.runpod_standin import RunPodStandin
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

# How long every node stays down: longer than the 21 s in which three tries used to be spent.
OUTAGE_SECONDS = 45.0


def test_it_waits_through_an_outage_of_every_node_and_finishes_with_its_tries_unspent(
    comfy_settings: list[StandinNode], settings: Any
) -> None:
    settings.FLEET_OUTAGE_WAIT_SECONDS = 120.0
    for node in comfy_settings:
        node.set_faults(sampler_seconds=2.0)
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
    outcome: list[str] = []

    def process() -> None:
        try:
            outcome.append(restore_attempt_process(attempt_id=str(attempt.pk)))
        finally:
            connection.close()

    worker = threading.Thread(target=process)
    worker.start()
    wait_for(lambda: RestoreAttempt.objects.filter(pk=attempt.pk).exclude(prompt_id="").exists(), timeout=30)

    for node in comfy_settings:
        node.kill()
    down_since = time.monotonic()
    # Shown as waiting for a node meanwhile, in the row the API and the admin read.
    wait_for(lambda: RestoreAttempt.objects.get(pk=attempt.pk).waiting_for == "node", timeout=30)
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
    for node in comfy_settings:
        node.start()
    worker.join(120)

    attempt.refresh_from_db()
    assert outcome == ["succeeded"]
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.tries == 1
    assert attempt.error_type == ""
    assert attempt.waiting_for == ""
    # The try that died with its node ran on it for a while: that GPU time is counted too.
    assert len(attempt.node_seconds) >= 1
    assert attempt.gpu_seconds > 0


def test_it_records_that_a_run_overflowed_to_runpod_and_why(comfy_settings: list[StandinNode], settings: Any) -> None:
    with RunPodStandin() as runpod:
        settings.RUNPOD_BASE_URL = runpod.url
        settings.RUNPOD_ENDPOINT_ID = runpod.endpoint_id
        settings.RUNPOD_API_KEY = runpod.api_key
        settings.RUNPOD_POLL_INTERVAL = 0.05
        settings.OVERFLOW_AFTER_SECONDS = 0.5
        settings.OVERFLOW_MAX_CONCURRENT = 2
        settings.OVERFLOW_DAILY_GPU_SECONDS = 1000.0
        pool = get_pool()
        held = [pool.scheduler.acquire("restore") for _ in comfy_settings]  # the own pool is saturated
        attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True))
        try:
            assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"
        finally:
            for slot in held:
                pool.scheduler.release(slot)
        today = pool.overflow_today()

    attempt.refresh_from_db()
    assert attempt.engine == "runpod"
    assert attempt.node == f"runpod:{runpod.endpoint_id}"
    assert attempt.engine_reason.startswith("overflow to RunPod: estimated wait")
    assert attempt.engine_label == "RunPod serverless GPU"
    assert attempt.gpu_seconds > 0
    assert today is not None
    assert today.runs == 1


def test_it_records_the_own_pool_and_labels_a_cpu_twin_for_what_ran(
    comfy_settings: list[StandinNode], settings: Any
) -> None:
    attempt = RestoreAttemptFactory.create(job=JobFactory.create(stored_original=True), workflow="restore_cpu")

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    attempt.refresh_from_db()
    assert attempt.engine == "comfyui"
    assert attempt.engine_reason == "own pool: a node slot was free"
    assert attempt.engine_label == "ComfyUI node, CPU test workflow"
    assert list(attempt.node_seconds) == [attempt.node]


def test_it_labels_the_production_workflow_on_a_node_as_a_gpu_node() -> None:
    assert engine_label("comfyui", workflow="restore") == "ComfyUI GPU node"
    assert engine_label("comfyui", workflow="restore_cpu") == "ComfyUI node, CPU test workflow"
    assert engine_label("local", workflow="restore_cpu") == "Local CPU engine (development)"
