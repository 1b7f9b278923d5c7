"""A PostgreSQL server of a test's own, on a free port, that the test may stop and start again.

Tests that take the database away (a restart, a long stop) must never touch the machine's
shared server: :class:`PostgresServer` runs ``initdb`` into a temporary folder and ``pg_ctl``
on a free loopback port, trust authentication, no fsync. As root (the CI machine) the server
runs as the ``postgres`` system user, since PostgreSQL refuses to run as root.
It also ends the sessions of the shared test database the way a restart would (``end_this_threads_database_session``,
``end_every_other_database_session``), for tests of what a worker does when its connection is cut.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rekindle.testing.ci import skip_unless_ci
from rekindle.testing.pipeline import free_port, wait_for


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/local/bin")
    if found is None:
        skip_unless_ci(f"{name} is not installed")
    return found


class PostgresServer:
    """``start()``, ``stop(mode)``, ``restart(mode)``; ``url(database)`` for a client."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="rekindle-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start")
        wait_for(self.accepts, timeout=30, what=f"PostgreSQL on {self.port}")
        return self

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (ends every session, as a restart does) or ``immediate`` (a crash)."""
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A started PostgreSQL of this test's own (never the machine's shared one); removed afterwards."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


def end_this_threads_database_session() -> None:
    """What a database restart does to this thread: the server ends its session (this thread's alone)."""
    from django.db import connection

    from rekindle.testing.pipeline import database_url

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def end_every_other_database_session() -> None:
    """A database restart as the other threads of this process see it: every session of the test database
    but this thread's ends."""
    from django.db import connection

    from rekindle.testing.pipeline import database_url

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> %s AND pid <> pg_backend_pid()",
            [pid],
        )
