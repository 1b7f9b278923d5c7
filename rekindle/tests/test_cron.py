"""The cron command base: rounds of units of work, the loop, SIGTERM, failures, the lock."""

from __future__ import annotations

import os
import signal
import threading
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from rekindle.cron import CronCommand, advisory_lock, advisory_lock_key


class CountdownCommand(CronCommand):
    """Works through a list of items; the name is what the summary line starts with."""

    help = "test command"

    def __init__(self, items: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.items = list(items)
        self.done: list[str] = []

    def handle_one(self) -> bool:
        if not self.items:
            return False
        item = self.items.pop(0)
        if item == "boom":
            raise RuntimeError("the unit of work broke")
        self.done.append(item)
        return True

    def summary(self) -> str:
        return f"did {len(self.done)} item(s)"


class LockedCommand(CountdownCommand):
    lock_name = "rekindle-test-locked-command"


def _run(command: CronCommand, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _in_other_thread_holding(name: str, held: threading.Event, release: threading.Event) -> threading.Thread:
    def hold() -> None:
        try:
            with advisory_lock(name) as acquired:
                assert acquired
                held.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


def test_it_runs_units_until_there_is_nothing_left_and_prints_one_line() -> None:
    command = CountdownCommand(["a", "b", "c"])
    out = _run(command)
    assert command.done == ["a", "b", "c"]
    assert out.strip().splitlines() == ["test_cron: did 3 item(s)"]


def test_it_exits_non_zero_when_a_unit_fails() -> None:
    command = CountdownCommand(["a", "boom", "c"])
    with pytest.raises(CommandError) as excinfo:
        _run(command)
    assert excinfo.value.returncode == 1
    assert "did 1 item(s)" in str(excinfo.value)
    assert "RuntimeError: the unit of work broke" in str(excinfo.value)
    # The failing unit ends the round: nothing after it ran.
    assert command.done == ["a"]


def test_it_caps_units_per_round() -> None:
    class OnePerRound(CountdownCommand):
        units_per_round = 1

    command = OnePerRound(["a", "b"])
    _run(command)
    assert command.done == ["a"]


# The loop closes stale database connections between rounds.
@pytest.mark.django_db
def test_it_stops_the_loop_cleanly_on_sigterm() -> None:
    class SignalsItself(CountdownCommand):
        rounds = 0

        def round_started(self) -> None:
            self.rounds += 1
            if self.rounds == 2:
                # What `kill PID` does to a looping cron command between two units.
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    command = SignalsItself(["a", "b", "c"])
    out = _run(command, "--loop", "--interval", "0.01")
    # Round 1 did all three; round 2 got the signal and the loop ended without another unit.
    assert command.rounds == 2
    assert command.done == ["a", "b", "c"]
    assert out.strip().splitlines()[-1] == "test_cron: did 3 item(s)"
    assert signal.getsignal(signal.SIGTERM) is previous


# The loop closes stale database connections between rounds.
@pytest.mark.django_db
def test_it_keeps_looping_after_a_failed_round_and_exits_zero_once_recovered() -> None:
    class RecoversThenStops(CountdownCommand):
        rounds = 0

        def round_started(self) -> None:
            self.rounds += 1
            if self.rounds == 2:
                self.items = ["late"]
            if self.rounds == 3:
                self.stop()

    command = RecoversThenStops(["boom"])
    out = _run(command, "--loop", "--interval", "0")
    assert command.done == ["late"]
    assert "1 failure(s)" in out


@pytest.mark.django_db(transaction=True)
def test_it_does_nothing_while_another_run_holds_the_lock() -> None:
    held, release = threading.Event(), threading.Event()
    thread = _in_other_thread_holding(LockedCommand.lock_name or "", held, release)
    try:
        command = LockedCommand(["a"])
        out = _run(command)
    finally:
        release.set()
        thread.join()
    assert command.done == []
    assert "(another run holds the lock)" in out

    # Once the other run is gone, the next run does the work.
    command = LockedCommand(["a"])
    _run(command)
    assert command.done == ["a"]


@pytest.mark.django_db(transaction=True)
def test_it_gives_the_advisory_lock_to_one_holder_at_a_time() -> None:
    held, release = threading.Event(), threading.Event()
    thread = _in_other_thread_holding("rekindle-test-lock", held, release)
    try:
        with advisory_lock("rekindle-test-lock") as acquired:
            assert not acquired
        with advisory_lock("rekindle-test-other-lock") as acquired:
            assert acquired
    finally:
        release.set()
        thread.join()
    with advisory_lock("rekindle-test-lock") as acquired:
        assert acquired


def test_it_derives_a_stable_bigint_key() -> None:
    key = advisory_lock_key("purge_expired_jobs")
    assert key == advisory_lock_key("purge_expired_jobs")
    assert key != advisory_lock_key("prune_orphan_files")
    assert -(2**63) <= key < 2**63


@pytest.mark.django_db(transaction=True)
def test_a_locked_loop_outlives_its_database_connection_dropping() -> None:
    """The server ends the loop's session (a PostgreSQL restart does so to every one): a failed round, then on."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        pytest.skip("ends a PostgreSQL session from another one")

    class DroppedBetweenRounds(LockedCommand):
        rounds = 0

        def round_started(self) -> None:
            self.rounds += 1
            if self.rounds == 1:
                self.items = ["first"]
            if self.rounds == 2:
                self.items = ["second"]
            if self.rounds == 3:
                self.stop()

        def handle_one(self) -> bool:
            did = super().handle_one()
            if self.done == ["first"] and not self.items:
                _terminate_backend(connection.connection.info.backend_pid)
            return did

    command = DroppedBetweenRounds([])
    out = _run(command, "--loop", "--interval", "0")
    # Round 1's unlock met the dead session; round 2 ran on a new connection.
    assert command.done == ["first", "second"]
    assert "1 failure(s)" in out
    assert "OperationalError" in out


def _terminate_backend(pid: int) -> None:
    import psycopg

    from rekindle.testing.services import POSTGRES_URL

    base = POSTGRES_URL.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
