"""Writes of restorations: queue a restore attempt, pick the one to keep, and run one in a worker."""

from __future__ import annotations

import io
import posixpath
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from PIL import Image, UnidentifiedImageError

from jobs.attempts import attempt_send_on_commit, attempt_timestamp_id, job_lock_for_new_attempt
from jobs.backpressure import queue_admit
from jobs.live import job_changed_on_commit
from jobs.models import AttemptStatus, Job
from jobs.runner import BadInput, RunContext, RunOutput, attempt_process, workflow_for_run
from rekindle import storage
from rekindle.engines.base import InputImage, RunRequest
from rekindle.errors import Conflict
from rekindle.workflows import workflow_for_kind
from restoration.models import RestoreAttempt


class RestoreNotSelectable(Conflict):
    code = "restore_not_selectable"
    message = "Only a succeeded restore attempt of this job can be chosen."


def restore_attempt_create(*, job: Job, params: dict[str, Any] | None) -> RestoreAttempt:
    """Queue a restore of the job's original with ``params``; its message goes out after commit.

    The parameters are checked against the configured restore workflow first (400
    ``invalid_parameters``), and stored with every default filled in (a random seed is
    drawn now, so a retry runs with the same one). 409 ``too_many_in_flight`` when the
    job already has the maximum number of attempts queued or running.
    """
    workflow = workflow_for_kind("restore")
    validated = workflow.validate(params)
    queue_admit("restore")
    with transaction.atomic():
        job_lock_for_new_attempt(job)
        attempt = RestoreAttempt.objects.create(job=job, workflow=workflow.name, parameters=validated)
        attempt_send_on_commit(attempt)
    return attempt


def restore_select(*, job: Job, restore_id: uuid.UUID | str) -> Job:
    """Make a succeeded restore attempt of this job its selected restore; 409 for any other attempt."""
    with transaction.atomic():
        restore = RestoreAttempt.objects.filter(job=job, pk=restore_id, status=AttemptStatus.SUCCEEDED).first()
        if restore is None:
            raise RestoreNotSelectable(details={"restore_id": str(restore_id)})
        Job.objects.filter(pk=job.pk).update(selected_restore=restore)
        job_changed_on_commit(job.pk)
    job.selected_restore = restore
    return job


# --- The worker's side ---------------------------------------------------------


def restore_attempt_process(*, attempt_id: str) -> str:
    """Run one restore attempt (the body of ``process_restoration``); see ``jobs.runner`` for the error policy."""
    return attempt_process(RestoreAttempt, attempt_id)


def as_jpeg(data: bytes) -> bytes:
    """The engine's image output as a JPEG (ComfyUI saves PNG), unchanged when it already is one."""
    if data[:3] == b"\xff\xd8\xff":
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput("invalid_output", f"The engine's output is not an image Pillow can read: {exc}") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=92, optimize=True)
    return buffer.getvalue()


def restore(run: RunContext[RestoreAttempt]) -> RunOutput:
    """The work of one restore run: the restored JPEG, and the job's first pick if it has none."""
    attempt = run.attempt
    job = attempt.job
    key = storage.restored_key(job.id, attempt_timestamp_id(attempt))

    def make_selected() -> None:
        # The first success becomes the job's pick, unless the person already chose one.
        Job.objects.filter(pk=job.pk, selected_restore__isnull=True).update(selected_restore=attempt.pk)

    if run.stored_by_earlier_try(key):
        return RunOutput(values={"result_key": key}, on_success=make_selected)
    workflow, params, timeout = workflow_for_run(
        attempt.workflow, attempt.parameters, settings.RESTORE_TIME_LIMIT_SECONDS
    )
    original = storage.read_bytes(job.original_key)
    result = run.run_engine(
        RunRequest(
            workflow=workflow.name,
            run_id=run.run_id,
            images=(
                InputImage(
                    param=workflow.image_params[0], filename=posixpath.basename(job.original_key), data=original
                ),
            ),
            params=params,
            timeout=timeout,
        )
    )
    run.store(key, as_jpeg(result.first("image").data), content_type="image/jpeg")
    return RunOutput(
        values={"result_key": key, "engine": result.engine, "node": result.node, "prompt_id": result.prompt_id},
        on_success=make_selected,
    )
