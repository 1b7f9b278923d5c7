"""Running one attempt in a worker: claim it, keep its lease alive, run the engine, record how it ended.

Every actor (``process_restoration``, ``process_animation``, ``generate_hd_result``) goes
through :func:`attempt_process`, which runs the *work* function its kind registered
(``jobs.kinds``): the slow I/O (read the input from storage, run the engine, store the
outputs) with no transaction open, returning the values to record. What happens to an
error is decided here, once:

- ``EngineCanceled``, or any error after the claim was lost (canceled by staff, taken over
  after the lease ran out): nothing more is written.
- transient (``TransientEngineError``, storage 5xx and throttling, connection errors and
  timeouts, the actor's time limit; the write of an output waits out S3 failing for
  ``STORAGE_WRITE_RETRY_SECONDS`` first): back to the queue with the error kept, and
  :class:`AttemptRetry` raised so Dramatiq redelivers the message with backoff; once
  ``MAX_TRIES`` claims are spent it fails with that error instead.
- the worker stopping (SIGTERM, past ``WORKER_SHUTDOWN_GRACE_SECONDS``; ``rekindle.worker_shutdown``):
  the run is stopped on its node and handed back (``attempt_release``), its try unspent, its
  message sent again at once for another worker.
- permanent (``PermanentEngineError``, :class:`BadInput`, a storage 4xx such as the
  original being gone): failed at once with the error recorded, no retry.
- anything else is a bug: failed at once as ``internal_error`` and logged with its traceback.
  Database errors are the exception; they propagate, the lease runs out, and
  ``requeue_stuck_attempts`` puts the attempt back.

Every line logged while an attempt runs carries its fields (``job_id``, ``attempt_id``, ``kind``,
``tries``, and ``engine``, ``node``, ``prompt_id`` once the engine has submitted the run), bound
with ``structlog.contextvars`` once the claim is won and unbound when the run ends; the heartbeat
thread runs in a copy of that context.

An engine that keeps a run's outputs where it ran (the ComfyUI pool, on the node) is told to
free them only once the attempt has ended (``RunContext.release_engine_results``): a try that
goes back to the queue after the node finished (S3 refused the write, the worker stopped, or
it died) leaves them there, and the next try fetches them instead of running the prompt again.

Outputs are written through :meth:`RunContext.store`, which writes only while the claim
still holds, and a run that ends without recording its success removes what it wrote when
no row will hold it (its job was deleted meanwhile, or it ended canceled under this claim):
see :func:`outputs_discard`. A later try that finds the outputs an earlier one stored but could
not record (:meth:`RunContext.stored_by_earlier_try`) records them without running again.

The writes that end a run (success, failure, back to the queue) and the records made while it
runs (where the prompt went, which engine took it, what it waits for, the GPU seconds of each
try) are tried again for ``DB_WRITE_RETRY_SECONDS`` when the database connection is lost (a
restart, a failover), reconnecting each time, so a result made during a short outage is kept
instead of re-run once the lease runs out; GPU seconds still unwritten after that are logged
and given up, never the result they came with. The heartbeat drops a connection the server
ended and opens a new one at its next beat. A message that meets the database away
before its claim is waited out by the broker (``rekindle.broker.OutageAwareRetries``),
without spending a try.

While the engine runs, a heartbeat thread renews the lease every third of
``LEASE_SECONDS``, writes progress at most once a second, and reads the row's status
about once a second: the engine's ``should_cancel`` answers from that, so a cancel (or a
takeover) stops the run on its node within a second or so.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.db import DatabaseError, connection
from dramatiq.middleware import Interrupt, Shutdown, TimeLimitExceeded
from requests import RequestException

from jobs.attempts import (
    REQUEUEABLE_STATUSES,
    attempt_add_node_seconds,
    attempt_claim,
    attempt_fail,
    attempt_record_routing,
    attempt_record_submission,
    attempt_record_waiting,
    attempt_release,
    attempt_renew_lease,
    attempt_retry_later,
    attempt_still_held,
    attempt_succeed,
    lease_seconds,
    retry_delay_ms,
    rows,
    tries_left,
)
from jobs.cleanups import file_cleanup_owe
from jobs.kinds import AttemptKind, kind_of
from jobs.models import IN_FLIGHT_STATUSES, Attempt
from rekindle import metrics, storage
from rekindle.bounded import give_back_freed_memory
from rekindle.db_outage import is_connection_error
from rekindle.engines import get_engine
from rekindle.engines.base import (
    EngineCanceled,
    EngineError,
    EngineResult,
    PermanentEngineError,
    RunHooks,
    RunRequest,
    TransientEngineError,
)
from rekindle.worker_shutdown import worker_stopping
from rekindle.workflows import Workflow, WorkflowParameterError, get_workflow

logger = logging.getLogger(__name__)
events = structlog.stdlib.get_logger(__name__)

AttemptT = TypeVar("AttemptT", bound=Attempt)
ResultT = TypeVar("ResultT")

# The engine's own timeout stays this far below the actor's time limit, leaving time to store the result.
TIME_LIMIT_MARGIN_SECONDS = 60

# Progress is written to the row at most this often (seconds); the status is read as often.
PROGRESS_INTERVAL = 1.0


# Waits between tries of a write while the database connection is lost (seconds): doubling, capped.
DB_WRITE_FIRST_WAIT = 0.2
DB_WRITE_MAX_WAIT = 2.0
# The same for writing a run's outputs while S3 fails (seconds).
STORAGE_WRITE_FIRST_WAIT = 0.5
STORAGE_WRITE_MAX_WAIT = 5.0


def with_db_retry(write: Callable[[], ResultT], *, what: str) -> ResultT:
    """``write()``, tried again for ``DB_WRITE_RETRY_SECONDS`` while the database connection is lost.

    Only a lost connection is tried again (the next try reconnects); any other database
    error, and the last one once the time is up, propagates. The writes it guards are
    conditional UPDATEs fenced by the claim, so a try whose commit went through before the
    connection dropped makes the next one find nothing to change (False), never a second write.
    """
    deadline = time.monotonic() + float(settings.DB_WRITE_RETRY_SECONDS)
    wait = DB_WRITE_FIRST_WAIT
    while True:
        try:
            return write()
        except DatabaseError as exc:
            if not is_connection_error(exc) or time.monotonic() + wait > deadline:
                raise
            logger.warning("attempt.db_write_retry what=%s error=%s wait=%.1f", what, type(exc).__name__, wait)
            _drop_connection()
            time.sleep(wait)
            wait = min(wait * 2, DB_WRITE_MAX_WAIT)


def with_storage_retry(write: Callable[[], Any], heartbeat: Heartbeat, *, what: str) -> None:
    """``write()`` of a run's output, tried again for ``STORAGE_WRITE_RETRY_SECONDS`` while S3 fails for now.

    The output is in hand only here: a try that gives it up goes back to the queue and
    must fetch it from the node again, or compute it again when the node lost it
    meanwhile (a restart). So a passing S3 failure (5xx, throttling, a connection error:
    ``storage.is_transient_error``) is waited out, doubling from 0.5 s up to 5 s, for as
    long as the claim holds and the worker is not stopping; then the error propagates.
    """
    deadline = time.monotonic() + float(settings.STORAGE_WRITE_RETRY_SECONDS)
    wait = STORAGE_WRITE_FIRST_WAIT
    while True:
        try:
            write()
            return
        except Exception as exc:
            if not storage.is_transient_error(exc) or time.monotonic() + wait > deadline:
                raise
            if heartbeat.should_cancel():
                raise
            logger.warning("attempt.storage_write_retry what=%s error=%s wait=%.1f", what, type(exc).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, STORAGE_WRITE_MAX_WAIT)


def _drop_connection() -> None:
    """Forget this thread's broken connection, so the next query opens a new one."""
    with contextlib.suppress(DatabaseError):
        connection.close()


class AttemptRetry(Exception):
    """The attempt went back to the queue after a transient error; the actor has the broker redeliver it.

    ``delay_ms`` is the wait the row recorded (``next_try_at``): the actor passes it to ``dramatiq.Retry``.
    """

    def __init__(self, message: str, *, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


class BadInput(Exception):
    """Input the run cannot use (a missing or undecodable image, parameters the workflow no longer accepts)."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


@dataclass
class RunOutput:
    """What a successful run records: model field values, and writes to make in the same transaction."""

    values: dict[str, Any] = field(default_factory=dict)
    on_success: Callable[[], None] | None = None


class Heartbeat(threading.Thread):
    """Renews the claim's lease, writes throttled progress, and notices a cancel or a takeover."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(name=f"heartbeat-{attempt.pk}", daemon=True)
        self.attempt = attempt
        # A new thread starts with an empty context: its lines carry the attempt's fields from this copy.
        self._log_context = contextvars.copy_context()
        self.lost = threading.Event()
        self._stop_event = threading.Event()
        self._progress = 0
        self._written_progress = 0
        now = time.monotonic()
        self._last_renewal = now
        self._last_check = now
        self._renew_every = max(lease_seconds() / 3.0, 0.5)
        self._tick = min(PROGRESS_INTERVAL, self._renew_every)

    def report(self, progress: int) -> None:
        """The engine's progress callback: only remembered here, written by the thread."""
        self._progress = max(0, min(int(progress), 99))

    def should_cancel(self) -> bool:
        # A worker past its shutdown grace stops the run on its node too (then hands it back).
        return self.lost.is_set() or worker_stopping()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)

    def run(self) -> None:
        self._log_context.run(self._run)

    def _run(self) -> None:
        try:
            while not self._stop_event.wait(self._tick):
                try:
                    self._beat()
                except DatabaseError:
                    logger.warning("Heartbeat of %s could not reach the database", self.attempt.pk, exc_info=True)
                    # A connection the server ended stays unusable: the next beat opens a new one.
                    _drop_connection()
        finally:
            # The thread's own database connection.
            connection.close()

    def _beat(self) -> None:
        now = time.monotonic()
        progress = self._progress
        due = now - self._last_renewal >= self._renew_every
        if due or progress != self._written_progress:
            held = attempt_renew_lease(self.attempt, progress=progress if progress != self._written_progress else None)
            self._last_renewal = self._last_check = now
            self._written_progress = progress
        elif now - self._last_check >= PROGRESS_INTERVAL:
            held = attempt_still_held(self.attempt)
            self._last_check = now
        else:
            return
        if not held:
            self.lost.set()
            self._stop_event.set()


class ClaimLost(Exception):
    """The claim was gone (canceled, taken over, the job deleted) when the run went to store its output."""


@dataclass
class RunContext(Generic[AttemptT]):
    """Handed to a work function: the claimed attempt, its heartbeat, a way to run the engine and to store outputs."""

    attempt: AttemptT
    heartbeat: Heartbeat
    # Keys this run wrote, so it can remove them again if nobody will ever record them.
    written: list[str] = field(default_factory=list)
    # What the engine keeps of each result it gave (``EngineResult.release``), freed once the attempt ends.
    releases: list[Callable[[], None]] = field(default_factory=list)

    def store(self, key: str, content: bytes, *, content_type: str) -> None:
        """Write one output under ``key``, only while this claim still holds the attempt.

        A claim lost by now (a cancel, a takeover, the job deleted while the engine ran)
        stores nothing and raises :class:`ClaimLost`. A loss after this check is the
        runner's to clean up: it knows what was written (``written``).
        """
        if self.heartbeat.lost.is_set() or not with_db_retry(
            lambda: attempt_still_held(self.attempt), what="claim check"
        ):
            self.heartbeat.lost.set()
            raise ClaimLost(f"{kind_of(self.attempt).name} attempt {self.attempt.pk}: claim lost before storing {key}")
        self.written.append(key)
        with_storage_retry(lambda: storage.put(key, content, content_type=content_type), self.heartbeat, what=key)

    def stored_by_earlier_try(self, *keys: str) -> bool:
        """Whether an earlier try of this attempt already stored every one of ``keys``.

        The keys are the attempt's own (the same for every try) and an object exists only
        once its write has finished, so what is there is a whole result of this attempt: a
        try whose success could not be recorded left it (the database away for longer than
        ``DB_WRITE_RETRY_SECONDS``, the worker killed between the write and the record). The
        try that finds it records it instead of running the workflow again, which matters
        most when the node lost the prompt meanwhile (a restart): there is nothing to fetch
        there. The keys join ``written``, so a run that ends without recording them removes
        them as it would its own. A first try asks nothing.
        """
        if self.attempt.tries <= 1 or not all(storage.exists(key) for key in keys):
            return False
        self.written.extend(keys)
        events.info("attempt.output_reused", keys=list(keys))
        return True

    @property
    def run_id(self) -> str:
        """Unique per claim, so names on the node and the prompt id never clash with another try's."""
        return f"{self.attempt.pk}-run{self.attempt.tries}"

    def run_engine(self, request: RunRequest) -> EngineResult:
        engine = get_engine()
        # The engine that takes the run may be another than the configured one (overflow to RunPod).
        running_on = [engine.name]

        structlog.contextvars.bind_contextvars(engine=engine.name)

        def submitted(node: str, prompt_id: str) -> None:
            # Bound here, where the engine names them, so the rest of the run's lines say where it runs.
            structlog.contextvars.bind_contextvars(engine=running_on[0], node=node, prompt_id=prompt_id)
            events.info("attempt.submitted")
            with_db_retry(
                lambda: attempt_record_submission(self.attempt, engine=running_on[0], node=node, prompt_id=prompt_id),
                what="submission",
            )

        def routed(name: str, reason: str) -> None:
            running_on[0] = name
            structlog.contextvars.bind_contextvars(engine=name)
            with_db_retry(lambda: attempt_record_routing(self.attempt, engine=name, reason=reason), what="routing")

        def used(node: str, seconds: float) -> None:
            # Told as each try on a node ends, a finished one included: a database away for longer
            # than the retries costs the count, never the run's result.
            try:
                with_db_retry(
                    lambda: attempt_add_node_seconds(self.attempt, node=node, seconds=seconds), what="node seconds"
                )
            except DatabaseError:
                logger.warning(
                    "attempt.node_seconds_lost attempt_id=%s node=%s seconds=%.1f", self.attempt.pk, node, seconds
                )

        paid = getattr(kind_of(self.attempt).actor, "queue_name", "") == settings.DRAMATIQ_QUEUE_PAID
        if self.attempt.tries_at_requeue > 0 and not request.priority and not paid:
            # Requeued by staff or the stuck-attempt cron: bulk work, served after customers' runs.
            request = replace(request, priority="bulk")

        if self.attempt.tries > 1 and self.attempt.node and self.attempt.prompt_id:
            # An earlier claim sent a prompt and did not see it end (its worker died, or it moved on):
            # the engine asks that node first and fetches a result already made instead of recomputing it.
            request = replace(request, earlier_node=self.attempt.node, earlier_prompt_id=self.attempt.prompt_id)

        def waiting(what: str) -> None:
            with_db_retry(lambda: attempt_record_waiting(self.attempt, waiting_for=what), what="waiting")

        result = engine.run(
            request,
            on_progress=self.heartbeat.report,
            should_cancel=self.heartbeat.should_cancel,
            on_submitted=submitted,
            hooks=RunHooks(
                waiting=waiting,
                routed=routed,
                usage=used,
            ),
        )
        if result.release is not None:
            self.releases.append(result.release)
        return result

    def release_engine_results(self) -> None:
        """Let the engine free what it keeps of this run's results, unless a later try may fetch them.

        A try that ends with the attempt back in the queue (a storage error after the node
        finished, the worker stopping) or held by another claim keeps them: the next try
        fetches the result from the node instead of computing it again (``earlier_node``).
        """
        if not self.releases:
            return
        try:
            status = rows(type(self.attempt)).filter(pk=self.attempt.pk).values_list("status", flat=True).first()
        except DatabaseError:
            return
        if status in IN_FLIGHT_STATUSES:
            return
        for release in self.releases:
            try:
                release()
            except Exception:
                logger.warning("attempt.engine_release_failed attempt_id=%s", self.attempt.pk, exc_info=True)
        self.releases.clear()


def workflow_for_run(name: str, parameters: Any, time_limit_seconds: int) -> tuple[Workflow, dict[str, Any], float]:
    """The attempt's workflow, its stored parameters checked again, and the engine timeout to use.

    A workflow removed or changed since the attempt was queued is bad input: no retry can help.
    """
    try:
        workflow = get_workflow(name)
    except KeyError:
        raise BadInput("unknown_workflow", f"The workflow {name!r} no longer exists.") from None
    try:
        validated = workflow.validate(parameters)
    except WorkflowParameterError as exc:
        raise BadInput("invalid_parameters", exc.message, {"fields": exc.fields}) from None
    timeout = min(workflow.timeout_seconds, max(time_limit_seconds - TIME_LIMIT_MARGIN_SECONDS, 1))
    return workflow, validated, float(timeout)


def classify(exc: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    """``(kind, code, message, details)`` of an error; kind is canceled, transient, permanent or internal."""
    if isinstance(exc, EngineCanceled):
        return "canceled", exc.code, exc.message, exc.details
    if isinstance(exc, ClaimLost):
        return "canceled", "claim_lost", str(exc), {}
    if isinstance(exc, TransientEngineError):
        return "transient", exc.code, exc.message, exc.details
    if isinstance(exc, PermanentEngineError | EngineError):
        return "permanent", exc.code, exc.message, exc.details
    if isinstance(exc, BadInput):
        return "permanent", exc.code, exc.message, exc.details
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if storage.is_transient_error(exc):
            return "transient", "storage_unavailable", f"Storage answered {code or 'an error'}; will retry.", {}
        return "permanent", "storage_error", f"Storage refused the request: {code or exc}", {}
    if isinstance(exc, FileNotFoundError):
        return "permanent", "input_missing", "A stored input of this run is gone.", {"path": str(exc.filename or "")}
    if isinstance(exc, BotoConnectionError | RequestException | ConnectionError | TimeoutError):
        return "transient", "connection_error", f"{type(exc).__name__}: {exc}", {}
    if isinstance(exc, BotoCoreError):
        return "transient", "storage_unavailable", f"{type(exc).__name__}: {exc}", {}
    if isinstance(exc, TimeLimitExceeded):
        return "transient", "time_limit", "The run took longer than its time limit.", {}
    if isinstance(exc, Interrupt):
        return "transient", "worker_stopped", "The worker stopped while it ran.", {}
    return "internal", "internal_error", f"{type(exc).__name__}: {exc}", {}


def attempt_process(model: type[AttemptT], attempt_id: str) -> str:
    """Claim, run (with its kind's work function) and record one attempt; return what happened.

    The answer is ``lost``, ``succeeded``, ``failed``, ``canceled`` or ``released`` (handed back to the
    queue because the worker is stopping). Raises
    :class:`AttemptRetry` after a transient error that has tries left.
    """
    kind = kind_of(model)
    attempt = attempt_claim(model, attempt_id)
    if attempt is None:
        logger.info("%s attempt %s: not queued any more, nothing to do", kind.name, attempt_id)
        return "lost"
    fields = {
        "job_id": str(attempt.job_id),
        "attempt_id": str(attempt.pk),
        "kind": kind.name,
        "tries": attempt.tries,
        # Unbound on the way out, whatever the engine bound meanwhile.
        "engine": "",
        "node": "",
        "prompt_id": "",
    }
    started = time.monotonic()
    with structlog.contextvars.bound_contextvars(**fields):
        events.info("attempt.claimed", workflow=attempt.workflow)
        # What the run raised, when it raised anything but a retry, is in the lines before.
        outcome = "error"
        try:
            outcome = _run_claimed(kind, attempt, attempt_id)
        except AttemptRetry:
            outcome = "retry"
            raise
        finally:
            events.info("attempt.finished", outcome=outcome, seconds=round(time.monotonic() - started, 3))
        return outcome


def _run_claimed(kind: AttemptKind, attempt: AttemptT, attempt_id: str) -> str:
    run = RunContext(attempt=attempt, heartbeat=Heartbeat(attempt))
    try:
        return _run_and_record(kind, run, attempt_id)
    finally:
        run.release_engine_results()


def _run_and_record(kind: AttemptKind, run: RunContext[AttemptT], attempt_id: str) -> str:
    attempt, heartbeat = run.attempt, run.heartbeat
    heartbeat.start()
    try:
        output = kind.work(run)
    except DatabaseError:
        raise
    except BaseException as exc:
        heartbeat.stop()
        stopping = worker_stopping() or isinstance(exc, Shutdown)
        # The worker is stopping: another worker takes it now, with this try given back.
        if stopping and not heartbeat.lost.is_set() and attempt_release(attempt):
            logger.info("%s attempt %s: handed back to the queue, the worker is stopping", kind.name, attempt_id)
            return "released"
        outcome = _record_error(attempt, exc, lost=heartbeat.lost.is_set())
        if outcome in ("canceled", "failed"):
            outputs_discard(attempt, run.written)
        if isinstance(exc, Interrupt):
            raise
        if outcome == "retry":
            raise AttemptRetry(str(exc), delay_ms=retry_delay_ms(attempt)) from exc
        if not isinstance(exc, Exception):
            raise
        return outcome
    finally:
        heartbeat.stop()
        # What the run decoded and encoded is freed by now; this thread's malloc arena would keep it.
        give_back_freed_memory()

    if heartbeat.lost.is_set() or not with_db_retry(
        lambda: attempt_succeed(attempt, values=output.values, on_success=output.on_success), what="success"
    ):
        logger.info("%s attempt %s: claim lost before the result was recorded", kind.name, attempt_id)
        outputs_discard(attempt, run.written)
        return "lost"
    return "succeeded"


def outputs_discard(attempt: Attempt, keys: list[str]) -> None:
    """Remove what this run stored when no row will ever hold it: the last writer cleans up after itself.

    Called once the run ended without recording a success, and always *after* its writes,
    so whatever deleted the job before then either already listed these keys or cannot
    have: whichever way the race went, nothing stays under a deleted job's keys. The keys
    are removed when the attempt's row is gone (its job deleted) or it ended canceled or
    failed under this very claim (``tries`` unchanged); they stay when another claim holds
    the attempt, because a takeover writes the same keys. Should S3 refuse, a deleted
    job's files are owed to ``cleanup_job_s3_files`` (a ``FileCleanup`` row) instead.
    """
    if not keys:
        return
    row = rows(type(attempt)).filter(pk=attempt.pk).values("status", "tries").first()
    gone = row is None
    ended_here = row is not None and row["status"] in REQUEUEABLE_STATUSES and row["tries"] == attempt.tries
    if not gone and not ended_here:
        return
    try:
        storage.delete_keys(keys)
    except Exception:
        logger.warning("attempt.outputs_not_discarded attempt_id=%s keys=%s", attempt.pk, keys, exc_info=True)
        if gone:
            file_cleanup_owe(attempt.job_id)
        return
    logger.info("attempt.outputs_discarded attempt_id=%s keys=%s job_gone=%s", attempt.pk, keys, gone)


# Error codes of classify() that are storage's failures (counted as S3 errors too).
STORAGE_ERROR_CODES = frozenset({"storage_unavailable", "storage_error", "input_missing"})


def _count_error(kind: str, category: str, code: str, exc: BaseException) -> None:
    metrics.ENGINE_ERRORS.labels(kind=kind, error_type=code, category=category).inc()
    if code in STORAGE_ERROR_CODES or (code == "connection_error" and isinstance(exc, BotoConnectionError)):
        metrics.STORAGE_ERRORS.labels(where="worker", error_type=code).inc()


def _record_error(attempt: Attempt, exc: BaseException, *, lost: bool) -> str:
    category, code, message, details = classify(exc)
    name = f"{kind_of(attempt).name} attempt {attempt.pk}"
    if category == "canceled" or lost:
        logger.info("%s: stopped (%s: %s)", name, code, message)
        return "canceled"
    _count_error(kind_of(attempt).name, category, code, exc)
    if category == "transient" and tries_left(attempt) > 0:
        logger.warning("%s: transient error, will retry: %s: %s", name, code, message)
        delay_ms = retry_delay_ms(attempt)
        with_db_retry(
            lambda: attempt_retry_later(attempt, error_type=code, message=message, details=details, delay_ms=delay_ms),
            what="retry",
        )
        return "retry"
    if category == "internal":
        logger.error("%s: failed on an unexpected error", name, exc_info=exc)
    else:
        logger.warning("%s: failed (%s): %s", name, code, message)
    details = {**details, "tries": attempt.tries}
    with_db_retry(lambda: attempt_fail(attempt, error_type=code, message=message, details=details), what="failure")
    return "failed"
