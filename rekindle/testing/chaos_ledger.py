"""The ledger of a chaos run: what was asked, what was answered, what the database and the bucket hold at the end.

``RequestLog`` counts every HTTP request the load sent and its answer while the run goes on;
``collect()`` reads the database, the bucket and the stand-ins' prompt records once the run has
drained (Django set up on the run's own database); ``violations()`` turns a ledger (a plain dict,
as written to JSON) into the broken promises, one line each; ``render()`` prints it as a table.
The promises:

- no 5xx for what a client sent, a 503 only with ``Retry-After``, never a 500, every request answered;
- every attempt terminal after the drain window (none queued or running);
- exactly the result objects of a succeeded attempt, none of a failed or canceled one;
- no engine run done twice for one attempt (two prompts of one attempt that both succeeded);
  no run of a deleted job still computing after the delete;
- after a delete nothing left under the job's keys; after ``prune_orphan_files`` no object
  without a row and no row without its object;
- each paid HD purchase has its HD result;
- workers' resident memory at the end within a bound of what it was at the start.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# How much a worker's resident memory may grow over a run before it counts as a leak.
RSS_GROWTH_LIMIT_MB = 300.0
# A run of a deleted job that was still computing this long after the delete's answer was not interrupted.
DELETE_INTERRUPT_GRACE_SECONDS = 3.0


@dataclass
class RequestLog:
    """Every request the load sent: counted by answer, and the ones that broke a promise, kept."""

    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_route: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    broken: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, route: str, status: int | None, *, retry_after: str | None, at: float, detail: str = "") -> None:
        """One answer (``status`` None: no answer at all: refused, reset, timed out)."""
        label = "no_answer" if status is None else str(status)
        why = ""
        if status is None:
            why = f"no answer ({detail})"
        elif status == 503 and not retry_after:
            why = "503 without Retry-After"
        elif status >= 500 and status != 503:
            why = f"{status}"
        with self.lock:
            self.sent += 1
            self.by_status[label] += 1
            self.by_route[route][label] += 1
            if why:
                self.broken.append({"route": route, "status": label, "why": why, "at": round(at, 1), "detail": detail})

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sent": self.sent,
                "by_status": dict(sorted(self.by_status.items())),
                "by_route": {route: dict(sorted(c.items())) for route, c in sorted(self.by_route.items())},
                "broken": list(self.broken),
            }


@dataclass
class DeletedJob:
    job_id: str
    at: float  # time.time() of the delete's answer
    attempt_ids: list[str]


def _expected_keys(kind: str, attempt: Any) -> list[str]:
    from jobs.attempts import attempt_timestamp_id
    from rekindle import storage

    if kind == "restore":
        return [storage.restored_key(attempt.job_id, attempt_timestamp_id(attempt))]
    if kind == "animation":
        ts = attempt_timestamp_id(attempt)
        return [storage.animation_preview_key(attempt.job_id, ts), storage.thumbnail_key(attempt.job_id, ts)]
    ts = attempt_timestamp_id(attempt.animation)
    return [storage.animation_result_key(attempt.job_id, ts)]


def bucket_keys(client: Any, bucket: str, prefixes: Iterable[str]) -> set[str]:
    keys: set[str] = set()
    for prefix in prefixes:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(entry["Key"] for entry in page.get("Contents", ()))
    return keys


def attempt_rows() -> dict[str, list[Any]]:
    from animation.models import AnimationAttempt, HDAttempt
    from restoration.models import RestoreAttempt

    return {
        "restore": list(RestoreAttempt.objects.all()),
        "animation": list(AnimationAttempt.objects.all()),
        "hd": list(HDAttempt.objects.select_related("animation")),
    }


def in_flight_count() -> int:
    from jobs.models import IN_FLIGHT_STATUSES

    return sum(1 for rows in attempt_rows().values() for attempt in rows if attempt.status in IN_FLIGHT_STATUSES)


def engine_runs(records: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Each attempt's prompts on every node, from the stand-ins' records: ``{attempt_id: [prompt, ...]}``.

    A prompt is ``{"node", "prompt_id", "run", "started", "ended", "how"}``; ``run`` is the
    runner's ``{attempt_id}-run{tries}``.
    """
    prompts: dict[tuple[str, str], dict[str, Any]] = {}
    for node, events in records.items():
        opened: list[tuple[str, str]] = []
        for event in events:
            if event.get("event") == "killed":
                for key in opened:
                    prompts[key].setdefault("ended", event["t"])
                    prompts[key].setdefault("how", "killed")
                opened = []
                continue
            run = str(event.get("run") or "")
            if "-run" not in run:
                continue
            key = (node, str(event["prompt_id"]))
            prompt = prompts.setdefault(key, {"node": node, "prompt_id": key[1], "run": run})
            if event["event"] == "queued":
                opened.append(key)
            elif event["event"] == "started":
                prompt["started"] = event["t"]
            elif event["event"] == "ended":
                prompt["ended"] = event["t"]
                prompt["how"] = event.get("how", "")
                if key in opened:
                    opened.remove(key)
    by_attempt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for prompt in prompts.values():
        by_attempt[prompt["run"].rsplit("-run", 1)[0]].append(prompt)
    return dict(by_attempt)


def collect(
    *,
    requests_log: RequestLog,
    created_ids: Mapping[str, set[str]],
    deleted: list[DeletedJob],
    records: Mapping[str, list[dict[str, Any]]],
    s3_client: Any,
    bucket: str,
    prune: Any,
    drain_seconds: float | None,
    rss: Mapping[str, tuple[int, int]],
    faults: list[dict[str, Any]],
    restarts: Mapping[str, int],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The ledger, once the run has drained. ``prune()`` runs ``prune_orphan_files`` and returns its summary."""
    from django.db import close_old_connections

    from billing.models import Purchase, PurchaseStatus
    from jobs.models import IN_FLIGHT_STATUSES, AttemptStatus, Job
    from jobs.retention import JOB_FILE_PREFIXES, referenced_keys

    close_old_connections()
    rows = attempt_rows()
    # A delete answered with an error may have gone through: its job counts as deleted if its row is gone.
    still_there = {
        str(pk) for pk in Job.objects.filter(pk__in=[d.job_id for d in deleted]).values_list("pk", flat=True)
    }
    # The first delete asked of each job (a failed one may be asked again).
    first = {d.job_id: d for d in reversed(deleted)}
    deleted = [d for d in first.values() if d.job_id not in still_there]
    deleted_ids = {d.job_id for d in deleted}
    attempts: dict[str, Any] = {}
    stuck: list[dict[str, Any]] = []
    for kind, items in rows.items():
        seen = set(created_ids.get(kind, set())) | {str(a.pk) for a in items}
        statuses = Counter(a.status for a in items)
        attempts[kind] = {
            "created": len(seen),
            "rows_at_end": len(items),
            "terminal": sum(
                statuses[s] for s in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELED)
            ),
            "stuck": sum(statuses[s] for s in IN_FLIGHT_STATUSES),
            "by_status": dict(sorted(statuses.items())),
        }
        stuck.extend(
            {"kind": kind, "id": str(a.pk), "status": a.status, "tries": a.tries} for a in items if a.is_in_flight
        )

    keys_before = bucket_keys(s3_client, bucket, JOB_FILE_PREFIXES)
    left_after_delete = sorted(
        key
        for key in keys_before
        for job_id in deleted_ids
        if key.startswith(
            (f"processed/{job_id}.", f"restored/{job_id}/", f"animated/{job_id}/", f"thumbnails/{job_id}/")
        )
    )
    prune_summary = prune()
    keys = bucket_keys(s3_client, bucket, JOB_FILE_PREFIXES)

    results: dict[str, Any] = {
        "succeeded": 0,
        "with_their_objects": 0,
        "missing_objects": [],
        "failed_or_canceled_with_objects": [],
    }
    for kind, items in rows.items():
        for attempt in items:
            expected = _expected_keys(kind, attempt)
            if attempt.status == AttemptStatus.SUCCEEDED:
                results["succeeded"] += 1
                missing = [k for k in expected if k not in keys]
                if missing:
                    results["missing_objects"].append({"kind": kind, "id": str(attempt.pk), "keys": missing})
                else:
                    results["with_their_objects"] += 1
            elif attempt.status in (AttemptStatus.FAILED, AttemptStatus.CANCELED):
                present = [k for k in expected if k in keys]
                if present:
                    results["failed_or_canceled_with_objects"].append(
                        {"kind": kind, "id": str(attempt.pk), "status": attempt.status, "keys": present}
                    )
    originals_missing = sorted(job.original_key for job in Job.objects.all() if job.original_key not in keys)
    held = referenced_keys(keys)
    unheld = sorted(key for key in keys if key not in held)

    runs = engine_runs(records)
    duplicates = []
    for attempt_id, prompts in runs.items():
        succeeded = [p for p in prompts if p.get("how") == "success"]
        if len(succeeded) > 1:
            duplicates.append(
                {"attempt": attempt_id, "successful_prompts": len(succeeded), "nodes": [p["node"] for p in succeeded]}
            )
    after_delete = []
    for job in deleted:
        for attempt_id in job.attempt_ids:
            for prompt in runs.get(attempt_id, []):
                ended = prompt.get("ended")
                if prompt.get("how") == "success" and ended and ended > job.at + DELETE_INTERRUPT_GRACE_SECONDS:
                    after_delete.append(
                        {"job": job.job_id, "attempt": attempt_id, "seconds_after_delete": round(ended - job.at, 1)}
                    )

    paid = Purchase.objects.filter(status=PurchaseStatus.PAID, animation__isnull=False).values_list(
        "animation_id", flat=True
    )
    paid_animations = {str(a) for a in paid}
    hd_done = {
        str(hd.animation_id)
        for hd in rows["hd"]
        if hd.status == AttemptStatus.SUCCEEDED and all(k in keys for k in _expected_keys("hd", hd))
    }
    return {
        "meta": dict(meta),
        "requests": requests_log.as_dict(),
        "attempts": attempts,
        "stuck": stuck,
        "results": results,
        "engine_runs": {
            "attempts_run": len(runs),
            "prompts": sum(len(p) for p in runs.values()),
            "duplicates": duplicates,
            "finished_after_delete": after_delete,
        },
        "storage": {
            "deleted_jobs": len(deleted_ids),
            "left_after_delete": left_after_delete,
            "prune": prune_summary,
            "orphans_after_prune": unheld,
            "rows_missing_object": originals_missing + [k for r in results["missing_objects"] for k in r["keys"]],
        },
        "purchases": {
            "paid": len(paid_animations),
            "hd_results": len(paid_animations & hd_done),
            "paid_without_hd": sorted(paid_animations - hd_done),
        },
        "drain_seconds": None if drain_seconds is None else round(drain_seconds, 1),
        "worker_rss_mb": {name: [round(a / 2**20, 1), round(b / 2**20, 1)] for name, (a, b) in sorted(rss.items())},
        "faults": faults,
        "restarts": dict(restarts),
    }


def prune_with_grace(seconds: float) -> str:
    """``prune_orphan_files`` as if ``seconds`` had passed beyond its grace: every object older than that goes.

    The command takes whole hours (at least 1); the run lasts minutes, so its clock is moved
    forward instead, through the hook the command keeps for that.
    """
    import io

    from django.core.management import call_command
    from django.utils import timezone

    from jobs.management.commands.prune_orphan_files import Command

    now = timezone.now()
    original = Command.clock
    Command.clock = staticmethod(lambda: now + timedelta(hours=1) - timedelta(seconds=seconds))
    out = io.StringIO()
    try:
        call_command("prune_orphan_files", grace_hours=1, stdout=out)
    finally:
        Command.clock = original
    return out.getvalue().strip()


def violations(ledger: Mapping[str, Any]) -> list[str]:
    """Every broken promise of a ledger, one line each (empty: the run kept them all)."""
    found: list[str] = []
    requests = ledger["requests"]
    broken = Counter((b["route"], b["why"].split(" (")[0]) for b in requests["broken"])
    for (route, why), count in sorted(broken.items()):
        found.append(f"requests: {count} x {why} on {route}")
    for kind, counts in ledger["attempts"].items():
        if counts["stuck"]:
            found.append(
                f"attempts: {counts['stuck']} {kind} attempt(s) still queued or running after the drain window"
            )
    results = ledger["results"]
    if results["missing_objects"]:
        found.append(f"results: {len(results['missing_objects'])} succeeded attempt(s) without their object(s)")
    if results["failed_or_canceled_with_objects"]:
        found.append(
            f"results: {len(results['failed_or_canceled_with_objects'])} failed/canceled attempt(s) with objects"
        )
    runs = ledger["engine_runs"]
    if runs["duplicates"]:
        found.append(f"engine runs: {len(runs['duplicates'])} attempt(s) computed to success more than once")
    if runs["finished_after_delete"]:
        found.append(
            f"engine runs: {len(runs['finished_after_delete'])} run(s) of deleted jobs computed to the end "
            "after the delete"
        )
    storage = ledger["storage"]
    if storage["left_after_delete"]:
        found.append(f"storage: {len(storage['left_after_delete'])} object(s) left under deleted jobs' keys")
    if storage["orphans_after_prune"]:
        found.append(f"storage: {len(storage['orphans_after_prune'])} object(s) with no row after prune_orphan_files")
    if storage["rows_missing_object"]:
        found.append(f"storage: {len(storage['rows_missing_object'])} row(s) pointing at a missing object")
    purchases = ledger["purchases"]
    if purchases["paid"] != purchases["hd_results"]:
        found.append(f"purchases: {purchases['paid']} paid, {purchases['hd_results']} HD results made")
    if ledger["drain_seconds"] is None:
        found.append("drain: the work did not drain within the window")
    for name, (start, end) in ledger["worker_rss_mb"].items():
        if end - start > RSS_GROWTH_LIMIT_MB:
            found.append(f"memory: {name} grew from {start:.0f} MB to {end:.0f} MB (limit +{RSS_GROWTH_LIMIT_MB:.0f})")
    return found


def render(ledger: Mapping[str, Any]) -> str:
    """The ledger as a table for a person, and the violations under it."""
    lines: list[str] = []
    meta = ledger.get("meta", {})
    lines.append(
        f"chaos ledger  seed {meta.get('seed')}  {meta.get('mode')}  {meta.get('jobs')} jobs  {meta.get('seconds')} s"
    )
    row = "  {:<44} {}".format
    requests = ledger["requests"]
    lines.append(row("requests sent", requests["sent"]))
    lines.append(row("answered by status", ", ".join(f"{k}: {v}" for k, v in requests["by_status"].items())))
    lines.append(row("broken (5xx, 503 without Retry-After, none)", len(requests["broken"])))
    for kind, counts in ledger["attempts"].items():
        lines.append(
            row(
                f"{kind} attempts created / terminal / stuck",
                f"{counts['created']} / {counts['terminal']} / {counts['stuck']}  {counts['by_status']}",
            )
        )
    results = ledger["results"]
    lines.append(
        row("succeeded attempts with their objects", f"{results['with_their_objects']} of {results['succeeded']}")
    )
    lines.append(row("failed/canceled attempts with objects", len(results["failed_or_canceled_with_objects"])))
    runs = ledger["engine_runs"]
    lines.append(row("engine prompts / attempts run", f"{runs['prompts']} / {runs['attempts_run']}"))
    lines.append(row("attempts computed to success twice", len(runs["duplicates"])))
    lines.append(row("runs finished after their job's delete", len(runs["finished_after_delete"])))
    storage = ledger["storage"]
    lines.append(
        row(
            "deleted jobs / objects left after delete",
            f"{storage['deleted_jobs']} / {len(storage['left_after_delete'])}",
        )
    )
    lines.append(row("prune_orphan_files", storage["prune"]))
    lines.append(row("objects with no row after prune", len(storage["orphans_after_prune"])))
    lines.append(row("rows pointing at a missing object", len(storage["rows_missing_object"])))
    purchases = ledger["purchases"]
    lines.append(row("purchases paid / HD results made", f"{purchases['paid']} / {purchases['hd_results']}"))
    drain = ledger["drain_seconds"]
    lines.append(row("drain after the last fault", "did not drain" if drain is None else f"{drain} s"))
    for name, (start, end) in ledger["worker_rss_mb"].items():
        lines.append(row(f"{name} RSS start / end", f"{start} MB / {end} MB"))
    lines.append(row("faults injected", ", ".join(f"{f['kind']}@{f['at']}s" for f in ledger["faults"])))
    if ledger.get("restarts"):
        lines.append(row("processes restarted by the supervisor", ledger["restarts"]))
    found = violations(ledger)
    lines.append(f"violations: {len(found)}")
    lines.extend(f"  - {line}" for line in found)
    return "\n".join(lines)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
