"""The requeue_stuck_attempts command, one unit of work at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from animation.models import HDAttempt
from jobs.management.commands.requeue_stuck_attempts import Command
from jobs.models import AttemptStatus
from rekindle.testing.factories import AnimationAttemptFactory, HDAttemptFactory, RestoreAttemptFactory
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_handles_one_stuck_attempt_per_call(queued: Any) -> None:
    past = timezone.now() - timedelta(seconds=1)
    dead_worker = RestoreAttemptFactory.create(status=AttemptStatus.RUNNING, tries=1, lease_expires_at=past)
    out_of_tries = RestoreAttemptFactory.create(status=AttemptStatus.RUNNING, tries=3, lease_expires_at=past)
    hd_dead_worker = HDAttemptFactory.create(status=AttemptStatus.RUNNING, tries=1, lease_expires_at=past)
    never_sent = AnimationAttemptFactory.create()
    healthy = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, tries=1, lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    command = Command()

    assert [command.handle_one() for _ in range(5)] == [True, True, True, True, False]

    statuses = dict(RestoreAttempt.objects.values_list("pk", "status"))
    assert statuses[dead_worker.pk] == AttemptStatus.QUEUED
    assert statuses[out_of_tries.pk] == AttemptStatus.FAILED
    assert statuses[healthy.pk] == AttemptStatus.RUNNING
    assert HDAttempt.objects.get(pk=hd_dead_worker.pk).status == AttemptStatus.QUEUED
    # Requeued after a worker died: bulk work (paid runs keep their queue). Resent: its own queue.
    assert queued.ids("bulk") == [str(dead_worker.pk)]
    assert queued.ids("paid") == [str(hd_dead_worker.pk)]
    assert queued.calls("interactive") == [("process_animation", str(never_sent.pk))]
    assert command.summary() == "requeued 2, resent 1, failed 1 attempt(s)"


def test_it_runs_as_a_command_with_a_summary(queued: Any, capsys: pytest.CaptureFixture[str]) -> None:
    RestoreAttemptFactory.create(last_enqueued_at=None)

    call_command("requeue_stuck_attempts")

    assert "requeue_stuck_attempts: requeued 0, resent 1, failed 0 attempt(s)" in capsys.readouterr().out


def test_it_resends_once_a_retry_whose_delayed_message_is_overdue(queued: Any, settings: Any) -> None:
    """A worker that loses its Redis connection forgets the delayed messages it holds; the row says when one was due."""
    settings.RETRY_OVERDUE_SECONDS = 15
    now = timezone.now()
    sent = now - timedelta(seconds=40)
    overdue = RestoreAttemptFactory.create(last_enqueued_at=sent, next_try_at=now - timedelta(seconds=20))
    RestoreAttemptFactory.create(last_enqueued_at=sent, next_try_at=now - timedelta(seconds=5))
    RestoreAttemptFactory.create(last_enqueued_at=sent, next_try_at=now + timedelta(seconds=30))
    command = Command()

    assert [command.handle_one(), command.handle_one()] == [True, False]

    assert queued.ids("interactive") == [str(overdue.pk)]
    overdue.refresh_from_db()
    assert overdue.next_try_at is None
    assert overdue.last_enqueued_at is not None
    assert overdue.last_enqueued_at > sent
    assert not Command().handle_one()


def test_it_resends_what_was_sent_before_the_brokers_redis_started(queued: Any) -> None:
    now = timezone.now()
    before = RestoreAttemptFactory.create(last_enqueued_at=now - timedelta(seconds=30))
    RestoreAttemptFactory.create(last_enqueued_at=now - timedelta(seconds=5))
    command = Command()
    command.round_started()
    command.broker_since = now - timedelta(seconds=10)

    assert [command.handle_one(), command.handle_one()] == [True, False]
    assert queued.ids("interactive") == [str(before.pk)]


def _gone_process() -> str:
    """The claim a process of this host would have left, once that process has exited."""
    import subprocess

    from jobs import processes

    child = subprocess.Popen(["sleep", "0.1"])
    identity = processes._identity(child.pid)
    child.wait()
    return identity


def test_it_takes_back_at_once_the_attempts_of_a_worker_process_that_is_gone(queued: Any) -> None:
    from jobs.attempts import tries_left
    from jobs.processes import process_identity

    lease = timezone.now() + timedelta(minutes=1)  # far from running out
    orphan = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, tries=1, lease_expires_at=lease, claimed_by=_gone_process()
    )
    alive = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, tries=1, lease_expires_at=lease, claimed_by=process_identity()
    )
    elsewhere = RestoreAttemptFactory.create(
        status=AttemptStatus.RUNNING, tries=1, lease_expires_at=lease, claimed_by="another-host/1/1"
    )
    command = Command()

    assert [command.handle_one(), command.handle_one()] == [True, False]

    orphan.refresh_from_db()
    assert orphan.status == AttemptStatus.QUEUED
    assert tries_left(orphan) == tries_left(alive) + 1  # the cut-off run spent no try
    assert queued.ids("interactive") == [str(orphan.pk)]
    statuses = dict(RestoreAttempt.objects.values_list("pk", "status"))
    assert statuses[alive.pk] == statuses[elsewhere.pk] == AttemptStatus.RUNNING
    assert "taken back 1" in command.summary()
