"""What the person behind a job is told when one of its attempts goes wrong, in the API and in emails.

An attempt records its error for staff as it happened: the engine's code (``error_type``),
its text (which names nodes, prompt ids, exceptions) and details. None of that is for
customers. They get one of a few stable public codes, with a sentence written for a
person that says what it means for them and what to do. Staff keep the whole story in
the admin and the logs.

======================  ===============================================================
public code             when
======================  ===============================================================
``retrying``            the attempt hit a passing problem and is queued to run again
``service_unavailable`` it failed on a problem on our side that a later try may not have
``timed_out``           it took longer than it may and was stopped
``input_unreadable``    the photo (or the restore it starts from) could not be read
``canceled``            it was canceled (by staff, or because the job changed)
``processing_failed``   anything else: the engine could not make a result of it
======================  ===============================================================

The API's own refusals of a request are in the same words for a person; the ones a
dependency's outage causes, with ``Retry-After``, are listed in :data:`REQUEST_ERROR_WORDS`
(``database_unavailable``: the database is restarting or failing over; ``storage_unavailable``:
the photo storage answers 5xx, throttles or times out).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.kinds import kind_of
from jobs.models import Attempt, AttemptStatus
from rekindle.errors import DatabaseUnavailable, StorageUnavailable

RETRYING = "retrying"
SERVICE_UNAVAILABLE = "service_unavailable"
TIMED_OUT = "timed_out"
INPUT_UNREADABLE = "input_unreadable"
CANCELED = "canceled"
PROCESSING_FAILED = "processing_failed"

PUBLIC_CODES = (RETRYING, SERVICE_UNAVAILABLE, TIMED_OUT, INPUT_UNREADABLE, CANCELED, PROCESSING_FAILED)

# The engines' and the runner's own codes, by what they mean for the person. Every code the
# code base records is listed (a test checks); one that is not still reads as ``processing_failed``.
_PUBLIC_CODE_OF = {
    **dict.fromkeys(
        (
            "node_unavailable",
            "nodes_unavailable",
            "nodes_busy",
            "node_busy",
            "prompt_lost",
            "stop_unconfirmed",
            "out_of_memory",
            "output_unreachable",
            "storage_unavailable",
            "storage_error",
            "connection_error",
            "worker_stopped",
            "worker_lost",
            "runpod_unreachable",
            "runpod_unavailable",
            "runpod_bad_answer",
            "runpod_job_lost",
            "runpod_auth",
            "runpod_rejected",
            "preflight_failed",
            "unknown_workflow",
        ),
        SERVICE_UNAVAILABLE,
    ),
    **dict.fromkeys(("timeout", "time_limit", "runpod_timed_out"), TIMED_OUT),
    **dict.fromkeys(
        ("invalid_image", "input_missing", "missing_input", "invalid_input", "restore_missing"), INPUT_UNREADABLE
    ),
    **dict.fromkeys(("canceled", "interrupted"), CANCELED),
    **dict.fromkeys(
        (
            "processing_failed",
            "execution_failed",
            "prompt_rejected",
            "upload_rejected",
            "request_rejected",
            "no_output",
            "bad_output",
            "invalid_output",
            "output_missing",
            "invalid_parameters",
            "runpod_failed",
            "internal_error",
        ),
        PROCESSING_FAILED,
    ),
}

_MESSAGES = {
    RETRYING: "We ran into a problem and will try to {action} again in a moment.",
    SERVICE_UNAVAILABLE: "We could not {action} because our service is having trouble. Please try again later.",
    TIMED_OUT: "We could not {action}: it took longer than it should. Please try again.",
    INPUT_UNREADABLE: "We could not {action} because we could not read the photo it starts from.",
    CANCELED: "This was canceled before it finished.",
    PROCESSING_FAILED: "We could not {action}. Please try again.",
}


# What the API says when it refuses new work for now (the answer's ``message``), for a person to read.
QUEUE_FULL = "queue_full"
REFUSAL_MESSAGES = {
    QUEUE_FULL: "We are busy right now, so we could not take this photo's new work. Please try again in a few minutes.",
}

# Codes of whole requests refused while something we depend on is down, with what the person reads.
REQUEST_ERROR_WORDS = {
    DatabaseUnavailable.code: DatabaseUnavailable.message,
    StorageUnavailable.code: StorageUnavailable.message,
}


@dataclass(frozen=True)
class CustomerError:
    code: str
    message: str


def public_code(error_type: str) -> str:
    """The public code of an engine's or the runner's error code."""
    return _PUBLIC_CODE_OF.get(error_type, PROCESSING_FAILED)


def customer_error(attempt: Attempt) -> CustomerError | None:
    """What to tell the person about the attempt's error; None when there is nothing to tell.

    A queued attempt that carries an error is waiting to be tried again; a running or
    succeeded one shows none (what is left of an earlier try is for staff).
    """
    if not attempt.error_type and not attempt.error_message:
        return None
    if attempt.status == AttemptStatus.QUEUED:
        code = RETRYING
    elif attempt.status in (AttemptStatus.FAILED, AttemptStatus.CANCELED):
        code = CANCELED if attempt.status == AttemptStatus.CANCELED else public_code(attempt.error_type)
    else:
        return None
    return CustomerError(code=code, message=_MESSAGES[code].format(action=kind_of(attempt).action))
