"""S3 refuses a restore's output after the node made it: the try waits it out, or the next fetches it from the node.

Real parts: two ComfyUI stand-ins, moto's S3 behind the fault-injecting proxy of the chaos
harness (it answers the result's writes 500, as S3's InternalError, past boto's own retries).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from jobs.models import AttemptStatus
from jobs.runner import AttemptRetry
from rekindle.testing.chaos_stack import FaultyS3Proxy, S3Faults
from rekindle.testing.factories import JobFactory, RestoreAttemptFactory
from rekindle.testing.s3 import S3Bucket, reset_storages
from restoration.models import RestoreAttempt
from restoration.services import restore_attempt_process

pytestmark = pytest.mark.django_db(transaction=True)

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
# More than botocore's own tries of one write, so the write really fails.
REFUSALS = 10


@pytest.fixture
def faulty_s3(s3_bucket: S3Bucket) -> Iterator[S3Faults]:
    faults = S3Faults()
    proxy = FaultyS3Proxy(int(s3_bucket.server.endpoint_url.rsplit(":", 1)[1]), faults)
    with override_settings(AWS_S3_ENDPOINT_URL=proxy.url):
        reset_storages()
        try:
            yield faults
        finally:
            proxy.close()
    reset_storages()


def _prompts(nodes: list[Any], attempt: RestoreAttempt, event: str) -> list[dict[str, Any]]:
    return [
        entry
        for node in nodes
        for entry in node.prompt_record()
        if entry["event"] == event and str(entry.get("run", "")).startswith(str(attempt.pk))
    ]


def test_a_result_s3_refuses_for_a_while_is_written_by_the_same_try(
    comfy_settings: list[Any], faulty_s3: S3Faults, s3_bucket: S3Bucket
) -> None:
    for node in comfy_settings:
        node.clear_record()
    job = JobFactory.create(stored_original=True)
    attempt = RestoreAttemptFactory.create(job=job, parameters=SMALL_RESTORE)
    faulty_s3.refuse_puts_under = f"restored/{job.id}/"
    faulty_s3.refusals_left = REFUSALS

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    attempt.refresh_from_db()
    assert faulty_s3.refusals_left == 0
    assert attempt.tries == 1
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]
    assert len(_prompts(comfy_settings, attempt, "queued")) == 1


def test_a_result_s3_refused_is_fetched_again_from_the_node_not_computed_again(
    comfy_settings: list[Any], faulty_s3: S3Faults, s3_bucket: S3Bucket, settings: Any
) -> None:
    settings.STORAGE_WRITE_RETRY_SECONDS = 0  # the try gives the output up at once
    for node in comfy_settings:
        node.clear_record()
    job = JobFactory.create(stored_original=True)
    attempt = RestoreAttemptFactory.create(job=job, parameters=SMALL_RESTORE)
    faulty_s3.refuse_puts_under = f"restored/{job.id}/"
    faulty_s3.refusals_left = REFUSALS

    with pytest.raises(AttemptRetry):
        restore_attempt_process(attempt_id=str(attempt.pk))

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.QUEUED
    assert attempt.error_type == "storage_unavailable"
    faulty_s3.refusals_left = 0  # S3 is back
    assert len(_prompts(comfy_settings, attempt, "queued")) == 1
    # The node keeps the output for the next try.
    node = next(node for node in comfy_settings if node.url == attempt.node)
    assert node.counters().get("files_removed", 0) == 1  # the uploaded photo only

    assert restore_attempt_process(attempt_id=str(attempt.pk)) == "succeeded"

    attempt.refresh_from_db()
    assert attempt.tries == 2
    assert len(_prompts(comfy_settings, attempt, "queued")) == 1  # made once, fetched twice
    assert s3_bucket.keys(f"restored/{job.id}/") == [attempt.result_key]
    # Once stored, the node's copy goes.
    assert node.counters()["files_removed"] == 2
