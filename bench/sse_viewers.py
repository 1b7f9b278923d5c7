"""200 people watching one job's page: memory, CPU and how soon each sees a change, measured by hand.

    .venv/bin/python bench/sse_viewers.py [--mode redis|database] [--viewers 200] [--changes 20]

``redis`` (production's shape): gunicorn with 2 uvicorn workers (one per core) on PostgreSQL
(database ``rekindle_bench_sse``), changes announced through Redis pub/sub. ``database`` (the
embedded mode of ``make run``): ``manage.py serve`` on a SQLite file, each process reading the
job every ``LIVE_POLL_SECONDS`` (0.5 s).

The viewers are one asyncio process of ``aiohttp`` clients, each holding
``GET /api/v1/jobs/{id}/events`` open with the job's token. Then this process writes the running
attempt's progress ``--changes`` times, 1.5 s apart, through the lifecycle's own function
(``attempt_renew_lease``, as a worker's heartbeat does), and notes when each write committed.
Reported: for every (viewer, change) the delay from the commit to the event's arrival (share
within 1 s, median, p95, max, events missed); the server processes' resident memory with no
viewer and with all of them; their CPU over the changes (share of one core, summed over processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "rekindle_bench_sse"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += process_tree(int(child))
    return found


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup_environment(mode: str, folder: Path) -> dict[str, str]:
    env = {
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "REKINDLE_VAR_DIR": str(folder),
        "LOG_LEVEL": "WARNING",
        "REKINDLE_ENGINE": "local",
    }
    if mode == "redis":
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        env |= {
            "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
            "REDIS_URL": REDIS_URL,
            "DRAMATIQ_REDIS_NAMESPACE": f"rekindle-bench-sse-{os.getpid()}",
        }
    else:
        env["DATABASE_URL"] = f"sqlite:///{folder / 'db.sqlite3'}"
    return env


def start_server(mode: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    python = sys.executable
    if mode == "redis":
        command = [
            str(Path(python).parent / "gunicorn"),
            "rekindle.asgi:application",
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
        ]
    else:
        command = [python, "manage.py", "serve", "--port", str(port)]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def viewer(session: Any, url: str, token: str, arrivals: dict[int, float], ready: asyncio.Event) -> None:
    headers = {"Accept": "text/event-stream", "X-Job-Token": token}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, response.status
        name = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "attempt":
                data = json.loads(line[6:])
                arrivals.setdefault(data["progress"], time.time())
                ready.set()


async def run(args: argparse.Namespace) -> None:
    import aiohttp
    from asgiref.sync import sync_to_async

    from jobs.attempts import attempt_claim, attempt_renew_lease
    from jobs.models import Job
    from rekindle.testing.factories import JobFactory, RestoreAttemptFactory, token_of
    from restoration.models import RestoreAttempt

    def make_job() -> tuple[Job, Any]:
        job = JobFactory.create(original_key="processed/bench.jpg")
        attempt = RestoreAttemptFactory.create(job=job)
        claimed = attempt_claim(RestoreAttempt, attempt.pk)
        return job, claimed

    job, claimed = await sync_to_async(make_job)()
    url = f"http://127.0.0.1:{args.port}/api/v1/jobs/{job.pk}/events"
    pids = process_tree(args.server.pid)
    idle_rss = rss_mb(pids)

    arrivals: list[dict[int, float]] = [{} for _ in range(args.viewers)]
    readies = [asyncio.Event() for _ in range(args.viewers)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(viewer(session, url, token_of(job), arrivals[i], readies[i]))
            for i in range(args.viewers)
        ]
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 120)
        await asyncio.sleep(2)
        pids = process_tree(args.server.pid)
        watched_rss = rss_mb(pids)

        committed: dict[int, float] = {}
        cpu_before, wall_before = cpu_seconds(pids), time.monotonic()
        for change in range(1, args.changes + 1):
            progress = change * (99 // args.changes)
            await sync_to_async(attempt_renew_lease)(claimed, progress=progress)
            committed[progress] = time.time()
            await asyncio.sleep(1.5)
        cpu = (cpu_seconds(pids) - cpu_before) / (time.monotonic() - wall_before)
        for task in tasks:
            task.cancel()

    delays = [arrival[p] - t for arrival in arrivals for p, t in committed.items() if p in arrival]
    missed = args.viewers * len(committed) - len(delays)
    within = sum(1 for d in delays if d <= 1.0) / (args.viewers * len(committed))
    print(f"mode {args.mode}: {args.viewers} viewers of one job, {len(committed)} changes, server pids {pids}")
    print(f"  events within 1 s of the change: {within:.1%} ({len(delays)} delivered, {missed} missed)")
    print(
        f"  delay: median {statistics.median(delays) * 1000:.0f} ms, p95 {percentile(delays, 0.95) * 1000:.0f} ms, "
        f"max {max(delays) * 1000:.0f} ms"
    )
    print(f"  server memory (RSS): {idle_rss:.0f} MB idle, {watched_rss:.0f} MB with {args.viewers} viewers")
    print(f"  server CPU during the changes: {cpu:.1%} of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("redis", "database"), default="redis")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="rekindle-bench-sse-"))
    env = setup_environment(args.mode, folder)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rekindle.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    args.port = free_port()
    args.server = start_server(args.mode, env, args.port)
    try:
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{args.port}/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        time.sleep(2)  # every worker up
        asyncio.run(run(args))
    finally:
        os.killpg(args.server.pid, signal.SIGTERM)
        args.server.wait(timeout=20)


if __name__ == "__main__":
    main()
