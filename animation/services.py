"""Writes of animations: queue an animation of a restore, queue its paid HD result, and run both in a worker."""

from __future__ import annotations

import posixpath
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction

from animation.models import AnimationAttempt, HDAttempt
from animation.video import as_mp4, thumbnail_jpeg
from jobs.attempts import (
    REQUEUEABLE_STATUSES,
    attempt_requeue,
    attempt_send_on_commit,
    attempt_timestamp_id,
    job_lock_for_new_attempt,
)
from jobs.backpressure import queue_admit
from jobs.models import AttemptStatus, Job
from jobs.runner import BadInput, RunContext, RunOutput, attempt_process, workflow_for_run
from rekindle import storage
from rekindle.engines.base import EngineResult, InputImage, RunRequest
from rekindle.errors import Conflict
from rekindle.workflows import workflow_for_kind
from restoration.models import RestoreAttempt


class NoRestoreToAnimate(Conflict):
    code = "no_restore_to_animate"
    message = "Animate needs a succeeded restore of this job: restore the photo first, or pick one."


class AnimationNotReady(Conflict):
    code = "animation_not_ready"
    message = "The HD result is made from a succeeded animation preview."


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
    queue_admit("animate_preview")
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


# Parameters of the preview that its HD result keeps: what moves, and the seed.
HD_CARRIED_PARAMETERS = ("prompt", "negative_prompt", "seed")


def hd_parameters(animation: AnimationAttempt) -> dict[str, Any]:
    """The HD run's parameters: the preview's creative choices, checked against the HD workflow.

    The HD video is the preview the person paid for, so its prompt and seed carry over;
    its size, length and frame rate are the HD workflow's own defaults.
    """
    workflow = workflow_for_kind("animate_hd")
    carried = {
        key: value
        for key, value in animation.parameters.items()
        if key in HD_CARRIED_PARAMETERS and key in workflow.params
    }
    return workflow.validate(carried)


def hd_result_generate(*, animation: AnimationAttempt) -> bool:
    """Mark the animation's HD result as paid for and queue its run; False when already queued, running or made.

    Called by billing (``billing.services``) inside the transaction that records a paid
    purchase or a staff comp, which keeps ``hd_paid`` in step with the purchases; nothing
    else should grant an HD result. Idempotent: calling it again only confirms ``hd_paid``.
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
        hd = HDAttempt.objects.filter(animation=row).first()
        if hd is not None:
            # Queued, running or made already; or failed or canceled: the same row runs again.
            return hd.status in REQUEUEABLE_STATUSES and attempt_requeue(hd)
        hd = HDAttempt.objects.create(
            job_id=row.job_id,
            animation=row,
            workflow=workflow_for_kind("animate_hd").name,
            parameters=hd_parameters(row),
        )
        attempt_send_on_commit(hd)
    return True


# --- The worker's side ---------------------------------------------------------


def animation_attempt_process(*, attempt_id: str) -> str:
    """Run one animation preview (the body of ``process_animation``); see ``jobs.runner`` for the error policy."""
    return attempt_process(AnimationAttempt, attempt_id)


def hd_result_process(*, attempt_id: str) -> str:
    """Make one animation's HD result (the body of ``generate_hd_result``)."""
    return attempt_process(HDAttempt, attempt_id)


def _restored_image(animation: AnimationAttempt, param: str) -> InputImage:
    key = animation.restore.result_key
    if not key:
        raise BadInput("restore_missing", "The restore this animation starts from has no stored image.")
    return InputImage(param=param, filename=posixpath.basename(key), data=storage.read_bytes(key))


def _run_video(run: RunContext[Any], animation: AnimationAttempt, time_limit: int) -> tuple[EngineResult, bytes]:
    """Run the attempt's video workflow on the animation's restored image; the result and its video as MP4."""
    workflow, params, timeout = workflow_for_run(run.attempt.workflow, run.attempt.parameters, time_limit)
    result = run.run_engine(
        RunRequest(
            workflow=workflow.name,
            run_id=run.run_id,
            images=(_restored_image(animation, workflow.image_params[0]),),
            params=params,
            timeout=timeout,
        )
    )
    output = result.first("video")
    return result, as_mp4(output.data, output.content_type)


def animate_preview(run: RunContext[AnimationAttempt]) -> RunOutput:
    """The work of one preview run: the video, its thumbnail, and the job's latest animation."""
    attempt = run.attempt
    ts = attempt_timestamp_id(attempt)
    preview_key = storage.animation_preview_key(attempt.job_id, ts)
    thumb_key = storage.thumbnail_key(attempt.job_id, ts)

    def make_latest() -> None:
        Job.objects.filter(pk=attempt.job_id).update(latest_animation=attempt.pk)

    if run.stored_by_earlier_try(preview_key, thumb_key):
        return RunOutput(values={"preview_key": preview_key, "thumbnail_key": thumb_key}, on_success=make_latest)
    result, video = _run_video(run, attempt, settings.ANIMATION_TIME_LIMIT_SECONDS)
    run.store(preview_key, video, content_type="video/mp4")
    run.store(thumb_key, thumbnail_jpeg(video), content_type="image/jpeg")
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


def animate_hd(run: RunContext[HDAttempt]) -> RunOutput:
    """The work of one HD run: the HD video, stored beside its preview (the same timestamp id)."""
    attempt = run.attempt
    animation = attempt.animation
    key = storage.animation_result_key(attempt.job_id, attempt_timestamp_id(animation))
    if run.stored_by_earlier_try(key):
        return RunOutput(values={"result_key": key})
    result, video = _run_video(run, animation, settings.HD_TIME_LIMIT_SECONDS)
    run.store(key, video, content_type="video/mp4")
    return RunOutput(
        values={"result_key": key, "engine": result.engine, "node": result.node, "prompt_id": result.prompt_id}
    )
