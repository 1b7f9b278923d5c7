"""The base of every cron management command: one unit of work per call, a loop mode, locks.

A command subclasses :class:`CronCommand` and implements :meth:`CronCommand.handle_one`,
which does one unit of work (requeue one attempt, delete one job, prune one page of
objects) and returns whether it did something. One *round* calls it until it returns
False; a plain run is one round, ``--loop`` runs a round every ``--interval`` seconds
until SIGTERM or SIGINT, which finish the unit in progress and then stop. Between
rounds ``close_old_connections()`` drops connections that went stale while sleeping.

Every run ends with one line saying what it did (``purge_expired_jobs: deleted 3
job(s)``; with ``--loop`` also after each round that did something, with totals
since the start) and exits non-zero when a unit of work raised (with ``--loop``:
when one raised in the last round). Tests call ``handle_one()``
directly, one unit at a time.

Two runs at once (two cron hosts, an overlapping schedule) must not do one unit twice.
Commands that work on rows claim them (a conditional UPDATE or ``SELECT ... FOR
UPDATE SKIP LOCKED``), so both runs make progress; commands whose work cannot be split
that way set ``lock_name`` and hold :func:`advisory_lock` for the whole round, so a second
run finds it held and does nothing. On PostgreSQL that is ``pg_try_advisory_lock``;
on SQLite (one machine by definition) it is an exclusive ``flock`` on a file in
``VAR_DIR/locks``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, close_old_connections, connections

logger = logging.getLogger(__name__)


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def advisory_lock(name: str, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[bool]:
    """Try to take the lock ``name`` without waiting; yield whether this process holds it.

    The PostgreSQL lock belongs to the database session, not to a transaction, so it
    is held across the transactions of a round and released at the end of the block
    (or when the connection closes, if the process dies). Each thread has its own
    connection in Django, so two threads contend for it like two processes do.
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        key = advisory_lock_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            row = cursor.fetchone()
        acquired = bool(row and row[0])
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return

    # SQLite and anything else: an exclusive lock on a file; flock is per open file
    # description, so two threads of one process contend for it as well.
    lock_dir = Path(settings.VAR_DIR) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class CronCommand(BaseCommand):
    """A management command made of units of work; see the module docstring.

    Subclasses implement :meth:`handle_one` and :meth:`summary`, may add arguments in
    :meth:`add_cron_arguments` and read them in :meth:`setup`.
    """

    # Held for a whole round when set: a second run at the same time does nothing.
    lock_name: str | None = None
    default_interval: ClassVar[float] = 60.0
    # At most this many units per round (None: until handle_one returns False).
    units_per_round: ClassVar[int | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.units_done = 0
        self.failures = 0
        self.last_error = ""
        self.lock_busy = False
        self._stop = threading.Event()

    # --- what a command provides ---------------------------------------------

    def add_cron_arguments(self, parser: CommandParser) -> None:
        """Add the command's own arguments."""

    def setup(self, **options: Any) -> None:
        """Read the command's own options before the first round."""

    def handle_one(self) -> bool:
        """Do one unit of work; return True if it did something (and there may be more)."""
        raise NotImplementedError

    def summary(self) -> str:
        """What the run did, in a few words (the command's name is added in front)."""
        return f"{self.units_done} unit(s) of work done"

    def round_started(self) -> None:
        """Called at the start of each round, once the lock (if any) is held."""

    # --- the machinery ---------------------------------------------------------

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="Run a round every --interval seconds until SIGTERM.")
        parser.add_argument(
            "--interval",
            type=float,
            default=self.default_interval,
            help=f"Seconds between rounds with --loop (default {self.default_interval:g}).",
        )
        self.add_cron_arguments(parser)

    @property
    def command_name(self) -> str:
        return self.__class__.__module__.rsplit(".", 1)[-1]

    def stop(self) -> None:
        """Ask the run to stop after the unit of work in progress."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_round(self) -> int:
        """Call :meth:`handle_one` until it has nothing more to do; return how many units it did.

        A unit that raises ends the round (so one bad item cannot spin the loop) and is
        counted as a failure; the exception is logged with its traceback. So is a database
        error while taking or releasing the round's lock: with ``--loop`` the next round
        starts on a new connection (``close_old_connections`` drops the broken one).
        """
        self.lock_busy = False
        if self.lock_name is None:
            return self._units()
        done = 0
        try:
            with advisory_lock(self.lock_name) as acquired:
                if not acquired:
                    self.lock_busy = True
                    return 0
                done = self._units()
        except DatabaseError as exc:
            # Taking or giving back the lock failed (the database restarted, the connection
            # dropped): a failed round, not the end of the loop; the lock goes with the session.
            self._failed(exc)
        return done

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.exception("%s: a unit of work failed", self.command_name)

    def _units(self) -> int:
        self.round_started()
        done = 0
        while not self.stopping:
            if self.units_per_round is not None and done >= self.units_per_round:
                break
            try:
                did_something = self.handle_one()
            except Exception as exc:
                self._failed(exc)
                break
            if not did_something:
                break
            done += 1
            self.units_done += 1
        return done

    def summary_line(self) -> str:
        line = f"{self.command_name}: {self.summary()}"
        if self.lock_busy:
            line += " (another run holds the lock)"
        if self.failures:
            line += f"; {self.failures} failure(s), last: {self.last_error}"
        return line

    def handle(self, *args: Any, loop: bool = False, interval: float = 60.0, **options: Any) -> None:
        self.setup(**options)
        if not loop:
            self.run_round()
            self._finish(failed=self.failures > 0)
            return

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("%s: received signal %s, stopping after the current unit", self.command_name, signum)
            self.stop()

        for sig in previous:
            signal.signal(sig, on_signal)
        last_round_failed = False
        try:
            while not self.stopping:
                failures_before = self.failures
                done = self.run_round()
                last_round_failed = self.failures > failures_before
                if done or last_round_failed:
                    self.stdout.write(self.summary_line())
                close_old_connections()
                # Event.wait returns at once when a signal sets it: no sleeping through SIGTERM.
                self._stop.wait(max(interval, 0.0))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # A loop that recovered from a failure stops cleanly; one stopped while failing says so.
        self._finish(failed=last_round_failed)

    def _finish(self, *, failed: bool) -> None:
        line = self.summary_line()
        if failed:
            raise CommandError(line, returncode=1)
        self.stdout.write(line)
