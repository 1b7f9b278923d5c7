"""process_animation and generate_hd_result with the local CPU engine: preview, thumbnail, HD result."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import av
import dramatiq
import pytest
from django.core import mail
from PIL import Image

from animation.models import AnimationAttempt, HDAttempt
from animation.services import AnimationNotReady, NoRestoreToAnimate, animation_attempt_create, hd_result_generate
from jobs.attempts import attempt_timestamp_id
from jobs.models import AttemptStatus, Job
from rekindle import storage
from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, jpeg_bytes
from rekindle.workflows import wan_frames, workflow_for_kind
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"seconds": 1, "fps": 8, "width": 256, "height": 256, "seed": 3}


@pytest.fixture
def worker(stub_worker_factory: Callable[..., dramatiq.Worker]) -> dramatiq.Worker:
    return stub_worker_factory(worker_timeout=50, worker_threads=1)


def drain(worker: dramatiq.Worker) -> None:
    broker: Any = worker.broker
    broker.join("interactive", fail_fast=True)
    broker.join("paid", fail_fast=True)
    # The ready email goes out from its own actor, on the default queue.
    broker.join("default", fail_fast=True)
    worker.join()


def restored_job() -> tuple[Job, RestoreAttempt]:
    job = JobFactory.create()
    restore = RestoreAttemptFactory.create(job=job, succeeded=True)
    storage.put(restore.result_key, jpeg_bytes(320, 240), content_type="image/jpeg")
    Job.objects.filter(pk=job.pk).update(selected_restore=restore)
    return job, restore


def video_shape(data: bytes) -> tuple[int, int, int]:
    """Width, height and frame count of a video."""
    container: Any = av.open(io.BytesIO(data))
    with container:
        frames = list(container.decode(video=0))
    return frames[0].width, frames[0].height, len(frames)


def frames_of(data: bytes) -> int:
    container: Any = av.open(io.BytesIO(data))
    with container:
        return len(list(container.decode(video=0)))


def test_it_animates_the_selected_restore_into_a_preview_and_thumbnail(worker: dramatiq.Worker) -> None:
    job, restore = restored_job()

    attempt = animation_attempt_create(job=job, params=SMALL)
    drain(worker)

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED, attempt.error_message
    assert attempt.restore_id == restore.pk
    ts = attempt_timestamp_id(attempt)
    assert attempt.preview_key == f"animated/{job.id}/{ts}_preview.mp4"
    assert attempt.thumbnail_key == f"thumbnails/{job.id}/{ts}.jpg"
    preview = storage.read_bytes(attempt.preview_key)
    assert preview[4:8] == b"ftyp"
    assert frames_of(preview) >= 8  # a second at 8 fps (Wan counts 4n+1 frames)
    assert Image.open(io.BytesIO(storage.read_bytes(attempt.thumbnail_key))).format == "JPEG"
    job.refresh_from_db()
    assert job.latest_animation_id == attempt.pk
    assert len(mail.outbox) == 1
    assert "animation preview" in mail.outbox[0].subject


def test_it_refuses_to_animate_without_a_succeeded_restore() -> None:
    job = JobFactory.create()
    failed = RestoreAttemptFactory.create(job=job, failed=True)

    with pytest.raises(NoRestoreToAnimate):
        animation_attempt_create(job=job, params=SMALL)
    with pytest.raises(NoRestoreToAnimate):
        animation_attempt_create(job=job, restore_id=failed.pk, params=SMALL)
    assert AnimationAttempt.objects.count() == 0


def test_it_makes_the_hd_result_once_paid_for(worker: dramatiq.Worker) -> None:
    job, restore = restored_job()
    animation = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, parameters=SMALL)

    assert hd_result_generate(animation=animation)
    assert not hd_result_generate(animation=animation)  # a second payment notice changes nothing
    drain(worker)

    animation.refresh_from_db()
    assert animation.hd_paid
    result = HDAttempt.objects.get(animation=animation)
    assert result.status == AttemptStatus.SUCCEEDED, result.error_message
    # Beside its preview: the same timestamp id, the HD result's suffix.
    assert result.result_key == f"animated/{job.id}/{attempt_timestamp_id(animation)}_result.mp4"
    assert result.parameters["seed"] == SMALL["seed"]
    # The preview's seed and prompt carry over; size and length are the HD workflow's, not the preview's.
    hd_workflow = workflow_for_kind("animate_hd")
    hd = hd_workflow.validate({"seed": SMALL["seed"]})
    assert video_shape(storage.read_bytes(result.result_key)) == (
        hd["width"],
        hd["height"],
        wan_frames(hd["seconds"], hd["fps"]),
    )
    assert (hd["width"], hd["height"]) != (SMALL["width"], SMALL["height"])
    assert result.tries == 1
    assert animation.tries == 0
    assert [m.subject for m in mail.outbox] == ["Your HD video is ready"]


def test_it_makes_no_hd_result_of_an_unfinished_preview() -> None:
    animation = AnimationAttemptFactory.create()

    with pytest.raises(AnimationNotReady):
        hd_result_generate(animation=animation)
    animation.refresh_from_db()
    assert not animation.hd_paid
    assert not HDAttempt.objects.filter(animation=animation).exists()
