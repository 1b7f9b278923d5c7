"""Writes of animations: queue an animation of a restore, queue its paid HD result, and run both in a worker."""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from animation.models import AnimationAttempt
from animation.video import as_mp4, thumbnail_jpeg
from jobs.attempts import (
    HD,
    attempt_requeue,
    attempt_send_on_commit,
    attempt_timestamp_id,
    job_lock_for_new_attempt,
)
from jobs.models import AttemptStatus, Job
from jobs.runner import BadInput, RunContext, RunOutput, attempt_process, workflow_for_run
from rekindle import storage
from rekindle.api_errors import Conflict
from rekindle.engines.base import EngineResult, InputImage, RunRequest
from rekindle.workflows import workflow_for_kind, workflow_name_for_kind
from restoration.models import RestoreAttempt


class NoRestoreToAnimate(Conflict):
    default_code = "no_restore_to_animate"
    default_detail = "Animate needs a succeeded restore of this job: restore the photo first, or pick one."


class AnimationNotReady(Conflict):
    default_code = "animation_not_ready"
    default_detail = "The HD result is made from a succeeded animation preview."


def animation_attempt_create(
    *, job: Job, restore_id: uuid.UUID | str | None = None, params: dict[str, Any] | None
) -> AnimationAttempt:
    """Queue an animation preview of a restore; its message goes out after commit.

    ``restore_id`` names a succeeded restore attempt of this job; without it the job's
    selected restore is used. 409 ``no_restore_to_animate`` when there is no such
    succeeded restore, 409 ``too_many_in_flight`` at the job's limit, 400
    ``invalid_parameters`` for parameters the preview workflow refuses.
    """
    workflow = workflow_for_kind("animate_preview")
    validated = workflow.validate(params)
    with transaction.atomic():
        job_lock_for_new_attempt(job)
        if restore_id is None:
            restore_id = Job.objects.filter(pk=job.pk).values_list("selected_restore_id", flat=True).first()
        restore = (
            RestoreAttempt.objects.filter(job=job, pk=restore_id, status=AttemptStatus.SUCCEEDED).first()
            if restore_id is not None
            else None
        )
        if restore is None:
            raise NoRestoreToAnimate(details={"restore_id": str(restore_id) if restore_id else None})
        attempt = AnimationAttempt.objects.create(
            job=job, restore=restore, workflow=workflow.name, parameters=validated
        )
        attempt_send_on_commit(attempt)
    return attempt


def hd_result_generate(*, animation: AnimationAttempt) -> bool:
    """Mark the animation's HD result as paid for and queue its run; False when already queued, running or made.

    Called by billing once the payment is confirmed, and by staff from the admin.
    Idempotent: calling it again (a webhook delivered twice) only confirms ``hd_paid``.
    A failed or canceled HD run is queued again on the same row. 409
    ``animation_not_ready`` when the preview has not succeeded.
    """
    with transaction.atomic():
        row = AnimationAttempt.objects.select_for_update().get(pk=animation.pk)
        if row.status != AttemptStatus.SUCCEEDED:
            raise AnimationNotReady(details={"animation_id": str(row.pk), "status": row.status})
        if not row.hd_paid:
            AnimationAttempt.objects.filter(pk=row.pk).update(hd_paid=True)
        animation.hd_paid = True
        if row.hd_status in (AttemptStatus.FAILED, AttemptStatus.CANCELED):
            return attempt_requeue(row, stage=HD)
        if row.hd_status:
            return False  # queued, running or succeeded already
        AnimationAttempt.objects.filter(pk=row.pk).update(
            hd_status=AttemptStatus.QUEUED, hd_queued_at=timezone.now(), hd_progress=0
        )
        attempt_send_on_commit(row, HD)
    return True


# --- The worker's side ---------------------------------------------------------


def animation_attempt_process(*, attempt_id: str) -> str:
    """Run one animation preview (the body of ``process_animation``); see ``jobs.runner`` for the error policy."""
    return attempt_process(AnimationAttempt, attempt_id, work=_animate_preview)


def hd_result_process(*, attempt_id: str) -> str:
    """Make one animation's HD result (the body of ``generate_hd_result``)."""
    return attempt_process(AnimationAttempt, attempt_id, work=_animate_hd, stage=HD)


def _restored_image(attempt: AnimationAttempt, param: str) -> InputImage:
    key = attempt.restore.result_key
    if not key:
        raise BadInput("restore_missing", "The restore this animation starts from has no stored image.")
    return InputImage(param=param, filename=posixpath.basename(key), data=storage.read_bytes(key))


def _run_video(
    run: RunContext[AnimationAttempt], workflow_name: str, params: Mapping[str, Any], time_limit: int
) -> tuple[EngineResult, bytes]:
    """Run a video workflow on the attempt's restored image; the result and its video as MP4."""
    workflow, params, timeout = workflow_for_run(workflow_name, params, time_limit)
    result = run.run_engine(
        RunRequest(
            workflow=workflow.name,
            run_id=run.run_id,
            images=(_restored_image(run.attempt, workflow.image_params[0]),),
            params=params,
            timeout=timeout,
        )
    )
    output = result.first("video")
    return result, as_mp4(output.data, output.content_type)


def _animate_preview(run: RunContext[AnimationAttempt]) -> RunOutput:
    attempt = run.attempt
    result, video = _run_video(run, attempt.workflow, attempt.parameters, settings.ANIMATION_TIME_LIMIT_SECONDS)
    ts = attempt_timestamp_id(attempt)
    preview_key = storage.animation_preview_key(attempt.job_id, ts)
    thumb_key = storage.thumbnail_key(attempt.job_id, ts)
    storage.put(preview_key, video, content_type="video/mp4")
    storage.put(thumb_key, thumbnail_jpeg(video), content_type="image/jpeg")

    def make_latest() -> None:
        Job.objects.filter(pk=attempt.job_id).update(latest_animation=attempt.pk)

    return RunOutput(
        values={
            "preview_key": preview_key,
            "thumbnail_key": thumb_key,
            "engine": result.engine,
            "node": result.node,
            "prompt_id": result.prompt_id,
        },
        on_success=make_latest,
    )


# Parameters of the preview that the HD run keeps.
HD_CARRIED_PARAMETERS = ("prompt", "negative_prompt", "seed")


def _animate_hd(run: RunContext[AnimationAttempt]) -> RunOutput:
    attempt = run.attempt
    hd_params = workflow_for_kind("animate_hd").params
    # The preview's creative choices (what moves, and the seed) carry over, so the HD video is the
    # preview the person paid for; its size, length and frame rate are the HD workflow's own.
    carried = {
        key: value for key, value in attempt.parameters.items() if key in HD_CARRIED_PARAMETERS and key in hd_params
    }
    result, video = _run_video(run, workflow_name_for_kind("animate_hd"), carried, settings.HD_TIME_LIMIT_SECONDS)
    key = storage.animation_result_key(attempt.job_id, attempt_timestamp_id(attempt))
    storage.put(key, video, content_type="video/mp4")
    return RunOutput(
        values={"result_key": key, "engine": result.engine, "node": result.node, "prompt_id": result.prompt_id}
    )
