"""Staff console pages on a realistic table: time and query count of the lists, searches, filters and dashboard.

    .venv/bin/python bench/admin_pages.py [--jobs 10000] [--requests 10]

Uses its own database ``rekindle_bench_admin`` on the local PostgreSQL (created, migrated
and filled on first run; ``--refill`` starts over) and local file storage. The table: N jobs
over the last 20 days, each with 3 restore attempts and one animation (statuses, nodes and
durations drawn with a fixed seed; about 1 in 6 runs failed). Each page is fetched
``--requests`` times through Django's test client as a superuser, after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "rekindle_bench_admin"
NODES = [f"http://gpu-{i}.internal:8188" for i in range(1, 5)]


def ensure_database(refill: bool) -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        if refill:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def fill(jobs: int) -> None:
    from django.db import transaction

    from animation.models import AnimationAttempt
    from jobs.models import AttemptStatus, Job
    from restoration.models import RestoreAttempt

    if Job.objects.exists():
        return
    rng = random.Random(7)
    now = datetime.now(UTC)
    statuses = [AttemptStatus.SUCCEEDED] * 8 + [AttemptStatus.FAILED] * 2 + [AttemptStatus.CANCELED]
    batch_jobs: list[Job] = []
    batch_restores: list[RestoreAttempt] = []
    batch_animations: list[AnimationAttempt] = []

    def flush() -> None:
        # Jobs point at their selected restore, created after them: PostgreSQL checks the
        # (deferred) foreign keys at commit.
        with transaction.atomic():
            Job.objects.bulk_create(batch_jobs)
            RestoreAttempt.objects.bulk_create(batch_restores)
            AnimationAttempt.objects.bulk_create(batch_animations)
        for batch in (batch_jobs, batch_restores, batch_animations):
            batch.clear()

    for n in range(jobs):
        created = now - timedelta(minutes=rng.randrange(20 * 24 * 60))
        job = Job(
            id=uuid.uuid4(),
            email=f"person{n}@example.com",
            token_hash="0" * 64,
            original_key=f"processed/{n}.jpg",
            original_format="jpeg",
            original_width=1600,
            original_height=1200,
            original_bytes=400_000,
            original_sha256="0" * 64,
            created_at=created,
        )
        batch_jobs.append(job)
        restores = []
        for i in range(3):
            status = rng.choice(statuses)
            queued = created + timedelta(minutes=i * 5)
            started = queued + timedelta(seconds=rng.uniform(0.2, 5))
            finished = started + timedelta(seconds=rng.gauss(40, 8))
            restore = RestoreAttempt(
                job=job,
                workflow="restore",
                status=status,
                progress=100,
                engine="comfyui",
                node=rng.choice(NODES),
                queued_at=queued,
                started_at=started,
                finished_at=finished,
                result_key=f"restored/{job.id}/{i}.jpg" if status == AttemptStatus.SUCCEEDED else "",
                error_type="execution_failed" if status == AttemptStatus.FAILED else "",
                error_message="KSampler: CUDA error" if status == AttemptStatus.FAILED else "",
            )
            restores.append(restore)
        batch_restores.extend(restores)
        chosen = next((r for r in restores if r.status == AttemptStatus.SUCCEEDED), None)
        if chosen is not None:
            job.selected_restore = chosen
            started = chosen.queued_at + timedelta(minutes=20)
            batch_animations.append(
                AnimationAttempt(
                    job=job,
                    restore=chosen,
                    workflow="animate_preview",
                    status=rng.choice(statuses),
                    engine="comfyui",
                    node=rng.choice(NODES),
                    queued_at=started,
                    started_at=started,
                    finished_at=started + timedelta(seconds=rng.gauss(90, 15)),
                    hd_paid=rng.random() < 0.1,
                )
            )
        if len(batch_jobs) == 1000:
            flush()
    flush()


def measure(client: object, url: str, requests: int) -> tuple[float, float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # type: ignore[attr-defined]
    times = []
    queries = 0
    for _ in range(requests):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--refill", action="store_true")
    args = parser.parse_args()

    ensure_database(args.refill)
    os.environ.update(
        {
            "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
            "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "testserver",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        }
    )
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    fill(args.jobs)
    print(f"table ready in {time.perf_counter() - started:.1f} s")
    admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(admin)

    pages = [
        ("job list (50 rows)", "/admin/jobs/job/"),
        ("jobs, latest restore failed", "/admin/jobs/job/?latest_restore=failed"),
        ("jobs, has HD paid", "/admin/jobs/job/?hd=paid"),
        ("jobs, search email part", "/admin/jobs/job/?q=person123"),
        ("jobs, search id prefix", "/admin/jobs/job/?q=1a2b"),
        ("restore attempts (50 rows)", "/admin/restoration/restoreattempt/"),
        ("restore attempts, failed", "/admin/restoration/restoreattempt/?status__exact=failed"),
        ("animation attempts (50 rows)", "/admin/animation/animationattempt/"),
        ("dashboard (14 days)", "/admin/dashboard/"),
    ]
    print(f"{'page':<32} {'median':>9} {'p95':>9} {'queries':>8}")
    for name, url in pages:
        median, p95, queries = measure(client, url, args.requests)
        print(f"{name:<32} {median * 1000:7.1f}ms {p95 * 1000:7.1f}ms {queries:8d}")


if __name__ == "__main__":
    main()
