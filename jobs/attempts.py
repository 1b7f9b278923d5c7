"""The lifecycle every attempt shares: claim, lease, finish, retry, requeue, cancel, and sending its message.

Status moves ``queued -> running -> succeeded | failed``, plus ``canceled``, and every
move is one conditional UPDATE on the current status, so two workers never run one
attempt and a message delivered twice does nothing the second time.

A claim (``queued -> running``) adds one to ``tries``. That value is the claim's fencing
token: every later write by the worker (lease renewal, progress, success, failure,
retry) is conditional on ``status = running AND tries = <its token>``. A worker whose
lease ran out, and whose attempt was requeued and claimed by another worker, therefore
cannot write its result over the new run's.

Every kind of attempt (``jobs.kinds``) has the same fields, from ``jobs.models.Attempt``,
so these functions work on any of them; the actor a message goes to is the kind's.

Every transition and progress write is also announced to the job's viewers once it commits
(``jobs.live.job_changed_on_commit``), for the live progress of the job page.

Messages go to the broker only after the transaction that queued the attempt commits
(``transaction.on_commit``) and carry the attempt's id alone. A failed send (Redis down)
is logged and swallowed: the attempt stays queued with ``last_enqueued_at`` empty, and
``requeue_stuck_attempts`` sends it again later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from jobs.kinds import attempt_kinds, kind_of
from jobs.live import job_changed, job_changed_on_commit
from jobs.models import IN_FLIGHT_STATUSES, Attempt, AttemptStatus, Job
from jobs.notifications import job_ready_email_queue
from jobs.processes import host_name, process_identity, process_is_gone
from rekindle import metrics
from rekindle.errors import Conflict

logger = logging.getLogger(__name__)
events = structlog.stdlib.get_logger(__name__)

AttemptT = TypeVar("AttemptT", bound=Attempt)
AttemptId = uuid.UUID | str

RUNNING = AttemptStatus.RUNNING
QUEUED = AttemptStatus.QUEUED


def rows(model: type[AttemptT]) -> QuerySet[AttemptT]:
    """Every row of an attempt model (the abstract base declares no manager of its own)."""
    return model._default_manager.all()


def lease_seconds() -> int:
    return int(settings.LEASE_SECONDS)


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=lease_seconds())


def tries_left(attempt: Attempt) -> int:
    """Claims the attempt may still get before a transient error fails it for good."""
    used = attempt.tries - attempt.tries_at_requeue
    return max(int(settings.MAX_TRIES) - used, 0)


def attempt_timestamp_id(attempt: Attempt) -> str:
    """The ``{timestamp_id}`` of every key this attempt writes, fixed for its whole life.

    Derived from the attempt (when it was first requested, and its id), never from the
    clock of the run, so a re-run after a crash overwrites the same object: one result
    object per attempt, whatever happens. UTC to the microsecond, so keys sort in the
    order the attempts were asked for, then four hex digits of the id, e.g.
    ``20250314T092653123456Z-9f3a``.
    """
    moment = attempt.queued_at.astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{attempt.id.hex[:4]}"


# --- How many a job may have in flight ------------------------------------------


class TooManyInFlight(Conflict):
    code = "too_many_in_flight"
    message = "This job already has as many attempts queued or running as it may; wait for one to finish."


def job_in_flight_count(job: Job) -> int:
    """The job's attempts of every kind that are queued or running."""
    return sum(kind.rows().filter(job=job, status__in=IN_FLIGHT_STATUSES).count() for kind in attempt_kinds())


def job_lock_for_new_attempt(job: Job) -> None:
    """Lock the job's row, then refuse (409) when it has ``MAX_ATTEMPTS_IN_FLIGHT`` attempts in flight already.

    Call it inside the transaction that creates the attempt: the lock makes two
    concurrent requests for one job count one after the other.
    """
    Job.objects.select_for_update().filter(pk=job.pk).values_list("pk", flat=True).first()
    in_flight = job_in_flight_count(job)
    if in_flight >= settings.MAX_ATTEMPTS_IN_FLIGHT:
        raise TooManyInFlight(details={"in_flight": in_flight, "max_in_flight": settings.MAX_ATTEMPTS_IN_FLIGHT})


# --- Sending the message ------------------------------------------------------


def attempt_send(model: type[Attempt], attempt_id: AttemptId, *, bulk: bool = False) -> bool:
    """Hand the attempt's id to its kind's actor now; False (logged) when the broker cannot take it.

    ``bulk``: on the bulk queue (``DRAMATIQ_QUEUE_BULK``) instead of the actor's own, so a
    requeued attempt waits behind customers' new work (paid runs keep their queue). On success ``last_enqueued_at``
    records when, so ``requeue_stuck_attempts`` can tell a message that never got through
    (empty) from one that is merely waiting.
    """
    kind = kind_of(model)
    # Paid work is never demoted: a requeued paid run stays on its own queue.
    bulk = bulk and getattr(kind.actor, "queue_name", "") != settings.DRAMATIQ_QUEUE_PAID
    try:
        _enqueue(kind.actor, str(attempt_id), settings.DRAMATIQ_QUEUE_BULK if bulk else None)
    except Exception:
        logger.warning(
            "Could not send %s attempt %s to the broker; it stays queued until requeue_stuck_attempts resends it",
            kind.name,
            attempt_id,
            exc_info=True,
        )
        return False
    rows(model).filter(pk=attempt_id).update(last_enqueued_at=timezone.now())
    events.info("attempt.sent", kind=kind.name, attempt_id=str(attempt_id), bulk=bulk)
    return True


def _enqueue(actor: Any, attempt_id: str, queue: str | None) -> None:
    """``actor.send(attempt_id)``, on ``queue`` when given (a worker runs a message by its actor, not its queue)."""
    if queue is None or not hasattr(actor, "message"):
        actor.send(attempt_id)
        return
    message = actor.message(attempt_id).copy(queue_name=queue)
    actor.broker.declare_queue(queue)
    actor.broker.enqueue(message)


def attempt_send_on_commit(attempt: Attempt, *, bulk: bool = False) -> None:
    """Send the attempt's message once the current transaction commits (at once outside one), and say it is queued.

    For an attempt that has just become queued (new, requeued): counted as a move to ``queued``.
    """
    _count_on_commit(attempt, QUEUED)
    _send_on_commit(attempt, bulk=bulk)


def _send_on_commit(attempt: Attempt, *, bulk: bool = False) -> None:
    model = type(attempt)
    attempt_id = attempt.pk
    job_id = attempt.job_id

    def send() -> None:
        attempt_send(model, attempt_id, bulk=bulk)
        job_changed(job_id)

    transaction.on_commit(send)


# --- The worker's side: claim, renew, finish ------------------------------------


def attempt_claim(model: type[AttemptT], attempt_id: AttemptId) -> AttemptT | None:
    """Claim a queued attempt for this worker, or None when the claim is lost.

    ``queued -> running`` in one conditional UPDATE: ``tries`` + 1 (the fencing token of
    this claim), ``started_at`` now, a fresh lease, progress and error cleared. A message
    delivered twice, or one for an attempt that was canceled or already ran, finds no
    queued row and gets None.
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = (
            rows(model)
            .filter(pk=attempt_id, status=QUEUED)
            .update(
                status=RUNNING,
                tries=F("tries") + 1,
                started_at=now,
                finished_at=None,
                lease_expires_at=_lease_until(now),
                next_try_at=None,
                claimed_by=process_identity(),
                progress=0,
                waiting_for="",
                error_type="",
                error_message="",
                error_details={},
            )
        )
        if claimed != 1:
            return None
        # The UPDATE holds the row lock until commit: this reads exactly what it wrote.
        attempt = rows(model).get(pk=attempt_id)
        job_changed_on_commit(attempt.job_id)
        # In the queue since it was asked for (first claim), else since its retry or requeue sent it again.
        entered = attempt.queued_at if attempt.tries == 1 else attempt.last_enqueued_at
        wait = metrics.seconds_between(entered, now)
        kind = kind_of(model).name

        def count() -> None:
            metrics.ATTEMPT_TRANSITIONS.labels(kind=kind, status=RUNNING).inc()
            if wait is not None:
                metrics.ATTEMPT_QUEUE_WAIT.labels(kind=kind).observe(wait)

        transaction.on_commit(count)
        return attempt


def _fenced(attempt: AttemptT) -> QuerySet[AttemptT]:
    """The attempt's row, if this worker's claim still holds it (running, same ``tries``)."""
    return rows(type(attempt)).filter(pk=attempt.pk, status=RUNNING, tries=attempt.tries)


def attempt_still_held(attempt: Attempt) -> bool:
    """Whether this worker's claim still holds the attempt (not canceled, not taken over)."""
    return _fenced(attempt).exists()


def attempt_renew_lease(attempt: Attempt, *, progress: int | None = None) -> bool:
    """Extend this claim's lease (and record progress, 0-100, when given); False when the claim is gone."""
    values: dict[str, Any] = {"lease_expires_at": _lease_until(timezone.now())}
    if progress is not None:
        values["progress"] = max(0, min(int(progress), 100))
    held = _fenced(attempt).update(**values) == 1
    if held and progress is not None:
        job_changed_on_commit(attempt.job_id)
    return held


def attempt_record_submission(attempt: Attempt, *, engine: str, node: str, prompt_id: str) -> bool:
    """Record where the run went (so a cancel can interrupt it there); False when the claim is gone."""
    return _fenced(attempt).update(engine=engine[:16], node=node[:255], prompt_id=prompt_id[:64]) == 1


def attempt_record_routing(attempt: Attempt, *, engine: str, reason: str) -> bool:
    """Record which engine takes the run and why (own pool, overflow); False when the claim is gone."""
    return _fenced(attempt).update(engine=engine[:16], engine_reason=reason[:255]) == 1


def attempt_record_waiting(attempt: Attempt, *, waiting_for: str) -> bool:
    """Record what the running attempt waits for (``"node"``), or ``""`` once it stops waiting."""
    return _fenced(attempt).update(waiting_for=waiting_for[:16]) == 1


def attempt_add_node_seconds(attempt: Attempt, *, node: str, seconds: float) -> None:
    """Add one try's execution seconds on ``node`` to the attempt, whoever holds it now (cost is cost)."""
    with transaction.atomic():
        row = rows(type(attempt)).select_for_update().filter(pk=attempt.pk).values_list("node_seconds", flat=True)
        current = row.first()
        if current is None:
            return
        totals = dict(current or {})
        totals[node[:255]] = round(float(totals.get(node, 0.0)) + seconds, 3)
        rows(type(attempt)).filter(pk=attempt.pk).update(node_seconds=totals)


def attempt_succeed(
    attempt: Attempt,
    *,
    values: Mapping[str, Any] | None = None,
    on_success: Callable[[], None] | None = None,
) -> bool:
    """Mark this claim's run succeeded with ``values`` (model field names: ``result_key``, ``node``...).

    ``on_success`` runs in the same transaction when the write went through (e.g. making
    it the job's selected restore). The ready email goes out after commit. False, and
    nothing written, when the claim is gone (canceled, or taken over after the lease ran out).
    """
    now = timezone.now()
    with transaction.atomic():
        done = _fenced(attempt).update(
            status=AttemptStatus.SUCCEEDED,
            progress=100,
            waiting_for="",
            finished_at=now,
            lease_expires_at=None,
            **dict(values or {}),
        )
        if done != 1:
            return False
        if on_success is not None:
            on_success()
        _ended_on_commit(attempt, AttemptStatus.SUCCEEDED, now)
        _notify_on_commit(attempt)
        job_changed_on_commit(attempt.job_id)
    return True


def attempt_fail(
    attempt: Attempt,
    *,
    error_type: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> bool:
    """Mark this claim's run failed for good, with its error; emails after commit. False when the claim is gone."""
    now = timezone.now()
    with transaction.atomic():
        done = _fenced(attempt).update(
            status=AttemptStatus.FAILED,
            finished_at=now,
            lease_expires_at=None,
            waiting_for="",
            error_type=error_type[:64],
            error_message=message,
            error_details=dict(details or {}),
        )
        if done != 1:
            return False
        _ended_on_commit(attempt, AttemptStatus.FAILED, now)
        _notify_on_commit(attempt)
        job_changed_on_commit(attempt.job_id)
    return True


def retry_delay_ms(attempt: Attempt) -> int:
    """How long the broker holds the attempt's message after a transient error on this claim (milliseconds).

    ``RETRY_MIN_BACKOFF_MS`` after the first try, doubling with each try of the current
    budget, at most ``RETRY_MAX_BACKOFF_MS``. Chosen here rather than by Dramatiq so the
    row can say when the retry is due (``next_try_at``).
    """
    used = max(attempt.tries - attempt.tries_at_requeue, 1)
    delay = int(settings.RETRY_MIN_BACKOFF_MS) * 2 ** min(used - 1, 30)
    return int(min(delay, int(settings.RETRY_MAX_BACKOFF_MS)))


def attempt_retry_later(
    attempt: Attempt,
    *,
    error_type: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    delay_ms: int = 0,
) -> bool:
    """Put this claim's run back in the queue after a transient error, keeping the error visible.

    The caller then has the broker redeliver the message in ``delay_ms`` (the actor raises
    ``dramatiq.Retry`` with that delay), and ``next_try_at`` records when that is due, so
    a delayed message the broker loses is noticed and sent again. False when the claim is gone.
    """
    now = timezone.now()
    done = _fenced(attempt).update(
        status=QUEUED,
        lease_expires_at=None,
        last_enqueued_at=now,
        next_try_at=now + timedelta(milliseconds=delay_ms),
        waiting_for="",
        error_type=error_type[:64],
        error_message=message,
        error_details=dict(details or {}),
    )
    if done == 1:
        job_changed_on_commit(attempt.job_id)
        _ended_on_commit(attempt, QUEUED, now)
    return done == 1


def _count_on_commit(attempt: Attempt, status: str) -> None:
    """Count the attempt's move into ``status`` once it commits (``rekindle_attempt_transitions_total``)."""
    kind = kind_of(attempt).name
    transaction.on_commit(lambda: metrics.ATTEMPT_TRANSITIONS.labels(kind=kind, status=status).inc())


def _ended_on_commit(attempt: Attempt, status: str, now: datetime) -> None:
    """Count the end of this claim's try (``status``: succeeded, failed, or queued for a retry) once it commits.

    The try's execution time is from its claim; an attempt that ended for good also has its total
    time from the request, unless staff requeued it (its ``queued_at`` is still the first request's).
    """
    kind = kind_of(attempt).name
    execution = metrics.seconds_between(attempt.started_at, now)
    total = None
    if status != QUEUED and attempt.tries_at_requeue == 0:
        total = metrics.seconds_between(attempt.queued_at, now)

    def count() -> None:
        metrics.ATTEMPT_TRANSITIONS.labels(kind=kind, status=status).inc()
        if execution is not None:
            outcome = "retry" if status == QUEUED else status
            metrics.ATTEMPT_EXECUTION.labels(kind=kind, outcome=outcome).observe(execution)
        if total is not None:
            metrics.ATTEMPT_TOTAL.labels(kind=kind, status=status).observe(total)

    transaction.on_commit(count)


def attempt_release(attempt: Attempt) -> bool:
    """Hand this claim's run back to the queue, its try not spent, and send its message now; False if gone.

    For a worker that stops (SIGTERM) before the run ended: the run was stopped on its node,
    so it is not the attempt's fault. The try is given back (``tries_at_requeue`` + 1) while
    ``tries`` keeps counting, so the fencing token never repeats and nothing this worker might
    still write can pass for the next claim's. The message goes to the attempt's own queue at
    once, so another worker starts it within a moment, not when the lease would have run out.
    """
    with transaction.atomic():
        done = _fenced(attempt).update(
            status=QUEUED,
            tries_at_requeue=F("tries_at_requeue") + 1,
            started_at=None,
            lease_expires_at=None,
            waiting_for="",
            progress=0,
        )
        if done != 1:
            return False
        attempt_send_on_commit(attempt, bulk=attempt.tries_at_requeue > 0)
        job_changed_on_commit(attempt.job_id)
    return True


def _notify_on_commit(attempt: Attempt) -> None:
    """Queue the ready email once this transaction commits; a worker of its own sends it."""
    job_ready_email_queue(attempt=attempt)


# --- Staff and cron: requeue, cancel, stuck attempts -----------------------------

REQUEUEABLE_STATUSES = (AttemptStatus.FAILED, AttemptStatus.CANCELED)


def attempt_requeue(attempt: Attempt) -> bool:
    """Queue a failed, canceled or stuck (running, lease expired) attempt again; False when running or queued.

    The SAME row goes back to ``queued`` (no new attempt is created): its id, output keys
    and history stay, its error is cleared, it gets a fresh retry budget (``tries`` keeps
    counting, as the fencing token must never repeat) and it will email again when it
    ends. The message is sent after commit.
    """
    model = type(attempt)
    now = timezone.now()
    stuck = Q(status=RUNNING, lease_expires_at__lt=now)
    with transaction.atomic():
        done = (
            rows(model)
            .filter(Q(status__in=REQUEUEABLE_STATUSES) | stuck, pk=attempt.pk)
            .update(
                status=QUEUED,
                tries_at_requeue=F("tries"),
                progress=0,
                started_at=None,
                finished_at=None,
                lease_expires_at=None,
                last_enqueued_at=None,
                next_try_at=None,
                notified_at=None,
                error_type="",
                error_message="",
                error_details={},
            )
        )
        if done != 1:
            return False
        attempt_send_on_commit(attempt, bulk=True)
    return True


def attempt_cancel(attempt: Attempt) -> bool:
    """Cancel a queued or running attempt; False when it already ended.

    A running one is also interrupted on its node, after commit, through the engine that
    runs it (``get_engine(engine).cancel(node, prompt_id)``); its worker notices on its
    own too, through its cancel check, and its late writes are refused by the fence.
    """
    model = type(attempt)
    now = timezone.now()
    with transaction.atomic():
        row = (
            rows(model)
            .select_for_update()
            .filter(pk=attempt.pk, status__in=IN_FLIGHT_STATUSES)
            .values("status", "engine", "node", "prompt_id")
            .first()
        )
        if row is None:
            return False
        rows(model).filter(pk=attempt.pk).update(
            status=AttemptStatus.CANCELED,
            finished_at=now,
            lease_expires_at=None,
            error_type="canceled",
            error_message="Canceled before it finished.",
        )
        job_changed_on_commit(attempt.job_id)
        _count_on_commit(attempt, AttemptStatus.CANCELED)
        engine, node, prompt_id = row["engine"], row["node"], row["prompt_id"]
        if row["status"] == RUNNING and engine and node and prompt_id:
            attempt_interrupt_on_commit(engine, node, prompt_id)
    return True


def job_running_prompts(job: Job) -> list[tuple[str, str, str]]:
    """``(engine, node, prompt_id)`` of every attempt of the job, of any kind, running on a node now."""
    found: list[tuple[str, str, str]] = []
    for kind in attempt_kinds():
        running = kind.rows().filter(job=job, status=RUNNING).exclude(node="").exclude(prompt_id="")
        found.extend(running.exclude(engine="").values_list("engine", "node", "prompt_id"))
    return found


def attempt_interrupt_on_commit(engine: str, node: str, prompt_id: str) -> None:
    """Interrupt ``prompt_id`` on its node once the current transaction commits (never inside it: a network call)."""
    transaction.on_commit(lambda: _interrupt(engine, node, prompt_id))


def _interrupt(engine_name: str, node: str, prompt_id: str) -> None:
    from rekindle.engines import get_engine

    try:
        get_engine(engine_name).cancel(node, prompt_id)
    except Exception:
        logger.warning("Could not interrupt prompt %s on %s", prompt_id, node, exc_info=True)


@dataclass(frozen=True)
class StuckOutcome:
    """What :func:`attempt_handle_one_stuck` did to one attempt."""

    model: type[Attempt]
    attempt_id: uuid.UUID
    action: str  # "requeued", "failed", "resent", or "unsent" (the broker refused the resend)


def attempt_handle_one_stuck(
    model: type[Attempt], *, resend: bool = True, broker_since: datetime | None = None
) -> StuckOutcome | None:
    """Deal with one stuck attempt of ``model``; None when there is none.

    In this order: a running attempt whose lease ran out (its worker died) goes back to
    the queue, or fails with ``worker_lost`` when its tries are spent. Then, unless
    ``resend`` is off (the broker refused a send this round already), a queued attempt
    whose message may not be in the broker is sent again: one that never got through; one
    whose message went out more than ``QUEUED_RESEND_SECONDS`` ago; one whose retry was
    due (``next_try_at``) more than ``RETRY_OVERDUE_SECONDS`` ago, because a worker whose
    Redis connection fails forgets the delayed messages it holds; and one sent before
    ``broker_since``, when the broker started (a restarted Redis may have lost it). A
    duplicate message is harmless: the claim lets only one run.

    The row is taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` so two runs at once each
    take a different one. A resend is marked sent inside that transaction (so a second run
    does not take it too) and sent after commit, outside any transaction; when the broker
    refuses, the mark is taken back and the outcome is ``unsent``, so the attempt is tried
    again at the next round. Call it outside a transaction.
    """
    now = timezone.now()
    expired = rows(model).filter(status=RUNNING, lease_expires_at__lt=now)
    with transaction.atomic():
        attempt = expired.select_for_update(skip_locked=True).order_by("lease_expires_at").first()
        if attempt is not None:
            if tries_left(attempt) > 0:
                rows(model).filter(pk=attempt.pk).update(
                    status=QUEUED, lease_expires_at=None, last_enqueued_at=None, next_try_at=None, waiting_for=""
                )
                attempt_send_on_commit(attempt, bulk=True)
                return StuckOutcome(model, attempt.pk, "requeued")
            rows(model).filter(pk=attempt.pk).update(
                status=AttemptStatus.FAILED,
                finished_at=now,
                lease_expires_at=None,
                next_try_at=None,
                error_type="worker_lost",
                error_message="The worker running it stopped answering, and it has no tries left.",
                error_details={"tries": attempt.tries},
            )
            _count_on_commit(attempt, AttemptStatus.FAILED)
            _notify_on_commit(attempt)
            job_changed_on_commit(attempt.job_id)
            return StuckOutcome(model, attempt.pk, "failed")
    if not resend:
        return None
    return _resend_one(model, now=now, broker_since=broker_since)


def _resend_due(now: datetime, broker_since: datetime | None) -> Q:
    """Queued attempts whose message may not be in the broker (see :func:`attempt_handle_one_stuck`)."""
    resend_before = now - timedelta(seconds=int(settings.QUEUED_RESEND_SECONDS))
    overdue_before = now - timedelta(seconds=int(settings.RETRY_OVERDUE_SECONDS))
    due = Q(last_enqueued_at__isnull=True) | Q(last_enqueued_at__lt=resend_before) | Q(next_try_at__lt=overdue_before)
    if broker_since is not None:
        due |= Q(last_enqueued_at__lt=broker_since)
    return due


def _resend_one(model: type[Attempt], *, now: datetime, broker_since: datetime | None) -> StuckOutcome | None:
    unsent = rows(model).filter(_resend_due(now, broker_since), status=QUEUED)
    with transaction.atomic():
        attempt = unsent.select_for_update(skip_locked=True).order_by("queued_at").first()
        if attempt is None:
            return None
        rows(model).filter(pk=attempt.pk).update(last_enqueued_at=now, next_try_at=None)
    if attempt_send(model, attempt.pk):
        job_changed(attempt.job_id)
        return StuckOutcome(model, attempt.pk, "resent")
    # Not sent: put the row back as it was, unless something moved it meanwhile.
    rows(model).filter(pk=attempt.pk, status=QUEUED, last_enqueued_at=now).update(
        last_enqueued_at=attempt.last_enqueued_at, next_try_at=attempt.next_try_at
    )
    return StuckOutcome(model, attempt.pk, "unsent")


def attempt_take_back_orphans(model: type[Attempt]) -> list[uuid.UUID]:
    """Put back in the queue, at once, the running attempts of this host whose worker process is gone.

    A worker killed with ``kill -9`` leaves its claims running until their leases run out;
    on the same host its process can be seen to be gone (``jobs.processes``), so a starting
    worker and ``requeue_stuck_attempts`` take them back without waiting. The try it spent
    is given back (``tries_at_requeue`` + 1: the run was cut off, not failed), ``tries``
    keeps counting (the fencing token never repeats), the node and prompt id stay so the
    next run can fetch a result the node already made, and the message goes out after
    commit on the attempt's own queue. Returns the ids taken back.
    """
    running = rows(model).filter(status=RUNNING, claimed_by__startswith=f"{host_name()}/")
    taken: list[uuid.UUID] = []
    with transaction.atomic():
        for attempt in running.select_for_update(skip_locked=True).order_by("started_at"):
            if not process_is_gone(attempt.claimed_by):
                continue
            done = _fenced(attempt).update(
                status=QUEUED,
                tries_at_requeue=F("tries_at_requeue") + 1,
                lease_expires_at=None,
                last_enqueued_at=None,
                waiting_for="",
                claimed_by="",
            )
            if done == 1:
                logger.warning(
                    "attempt.taken_back kind=%s attempt=%s process=%s",
                    kind_of(model).name,
                    attempt.pk,
                    attempt.claimed_by,
                )
                attempt_send_on_commit(attempt)
                taken.append(attempt.pk)
    return taken
