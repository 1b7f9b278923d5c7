"""Delete stored objects that no row points at, once older than the grace period, a page at a time.

Each unit of work lists one page (up to 1000 objects) under one of the job key
prefixes, keeps those older than ``ORPHAN_GRACE_HOURS`` that no job or attempt holds
(see ``jobs.retention``) and deletes them in one batch. A listing cannot be shared
between two runs, so a run holds the command's advisory lock for its whole round: a
second run at the same time does nothing. ``--dry-run`` prints the orphans' keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from jobs.retention import JOB_FILE_PREFIXES, StoredObject, delete_keys, orphans, stored_object_pages
from rekindle.cron import CronCommand


class Command(CronCommand):
    help = "Delete stored job files no row points at, older than ORPHAN_GRACE_HOURS, in batches; --dry-run lists them."
    default_interval = 6 * 3600.0
    lock_name = "prune_orphan_files"

    # Replaced in tests to look at the bucket from the future.
    clock: Callable[[], datetime] = staticmethod(timezone.now)

    def add_cron_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List the orphans; delete nothing.")
        parser.add_argument(
            "--grace-hours",
            type=int,
            default=None,
            help="Only objects older than this (default: the ORPHAN_GRACE_HOURS setting; at least 1).",
        )

    def setup(self, *, dry_run: bool = False, grace_hours: int | None = None, **options: Any) -> None:
        if grace_hours is not None and grace_hours < 1:
            raise CommandError("--grace-hours must be at least 1")
        self.dry_run = dry_run
        self.grace_hours = grace_hours or settings.ORPHAN_GRACE_HOURS
        self.scanned = 0
        self.orphan_keys: list[str] = []
        self._pages: Iterator[list[StoredObject]] | None = None

    def round_started(self) -> None:
        self.cutoff = self.clock() - timedelta(hours=self.grace_hours)
        self._pages = (page for prefix in JOB_FILE_PREFIXES for page in stored_object_pages(prefix))

    def handle_one(self) -> bool:
        if self._pages is None:
            self.round_started()
        assert self._pages is not None
        page = next(self._pages, None)
        if page is None:
            return False
        self.scanned += len(page)
        found = [obj.key for obj in orphans(page, cutoff=self.cutoff)]
        if self.dry_run:
            for key in found:
                self.stdout.write(f"orphan {key}")
        else:
            delete_keys(found)
        self.orphan_keys.extend(found)
        return True

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        suffix = " (dry run)" if self.dry_run else ""
        return (
            f"{verb} {len(self.orphan_keys)} orphan file(s) of {self.scanned} scanned, "
            f"older than {self.grace_hours} h{suffix}"
        )
