"""Delete expired jobs with all their files (retention), one job per unit of work.

A job expires ``JOB_RETENTION_DAYS`` after its last activity unless it has a paid HD
result (see ``jobs.retention``). Each unit deletes one job through ``job_delete``, the
service the API's DELETE uses: rows at once, files after commit by the
``cleanup_job_s3_files`` actor. Two runs at once never take the same job: each locks
the row it deletes with ``SELECT ... FOR UPDATE SKIP LOCKED`` (on SQLite, which has no
row locks, a run holds the command's lock instead). ``--dry-run`` lists what would go.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import connection, transaction

from jobs.models import Job
from jobs.retention import jobs_expired, retention_cutoff
from jobs.services import job_delete
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = "Delete jobs past retention (no paid HD result) with all their files; --dry-run lists them."
    default_interval = 3600.0

    def add_cron_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="List the jobs that would be deleted; change nothing."
        )
        parser.add_argument(
            "--days", type=int, default=None, help="Retention in days (default: the JOB_RETENTION_DAYS setting)."
        )

    def setup(self, *, dry_run: bool = False, days: int | None = None, **options: Any) -> None:
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1")
        self.dry_run = dry_run
        self.days = days or settings.JOB_RETENTION_DAYS
        self.deleted: list[str] = []
        self.listed: list[str] = []
        self._dry_run_jobs: Iterator[Job] | None = None
        if connection.vendor != "postgresql":
            self.lock_name = "purge_expired_jobs"

    def cutoff(self) -> datetime:
        return retention_cutoff(days=self.days)

    def round_started(self) -> None:
        if self.dry_run:
            self._dry_run_jobs = jobs_expired(cutoff=self.cutoff()).iterator()

    def handle_one(self) -> bool:
        if self.dry_run:
            return self._list_one()
        with transaction.atomic():
            job = jobs_expired(cutoff=self.cutoff()).select_for_update(skip_locked=True, of=("self",)).first()
            if job is None:
                return False
            job_id = str(job.id)
            job_delete(job=job)
        self.deleted.append(job_id)
        return True

    def _list_one(self) -> bool:
        if self._dry_run_jobs is None:
            self.round_started()
        assert self._dry_run_jobs is not None
        job = next(self._dry_run_jobs, None)
        if job is None:
            return False
        self.listed.append(str(job.id))
        self.stdout.write(f"would delete job {job.id} created {job.created_at:%Y-%m-%d}")
        return True

    def summary(self) -> str:
        if self.dry_run:
            return f"{len(self.listed)} job(s) past {self.days} days would be deleted (dry run)"
        return f"deleted {len(self.deleted)} job(s) past {self.days} days with their files"
