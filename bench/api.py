"""The API's hot read, ``GET /api/v1/jobs/{id}``, on production's shape: requests/s, latency, queries, middleware.

    .venv/bin/python bench/api.py [--duration 20] [--connections 16] [--workers 2]
    .venv/bin/python bench/api.py --profile [--requests 2000]     # in-process: middleware times, pyinstrument

Starts its own parts: a database ``rekindle_bench_api`` on the local PostgreSQL (made afresh,
migrated, dropped at the end), a Dramatiq and fleet namespace of its own on the local Redis
(the read touches neither, nor Django's cache), moto's S3 server on loopback with a bucket (so
every file URL in the answer is presigned, as on S3; ``--storage local``: local files and media
URLs), and gunicorn serving ``rekindle.asgi`` with ``--workers`` ``uvicorn_worker.UvicornWorker``
workers, as the Dockerfile runs it (access log on, to /dev/null; ``--worker-class`` for another).
DEBUG is off; HTTPS is what the proxy says (``X-Forwarded-Proto: https``, one proxy, as in
production). The job has three restore attempts
(two succeeded, one failed) and a succeeded animation with its paid, succeeded HD run (factories).

Load: Debian's ``wrk`` (``apt-get install -y wrk``; the bench installs it when it may, or says
how) with the job's token in ``X-Job-Token``, after a warm-up of a few seconds. Load generator
and server share the machine's cores. Reported: requests/s, latency percentiles, non-2xx answers,
the web workers' CPU time per request (from /proc; it depends less than the rate on what else the
machine runs), the load average before and after.

Queries per request: counted in this process with Django's test client and
``CaptureQueriesContext`` (the same settings and database as the server).

``--profile`` (no server): ``--requests`` GETs through the test client (Django's sync handler)
with every middleware wrapped in a timing shim; a middleware's own time is its call's time minus
the next one's (the innermost's "next" is the URL resolver and the view). Then the same requests
under pyinstrument, whose tree it prints (``--html`` writes it as a page).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "rekindle_bench_api"
# What a load balancer in front of the app adds (NUM_PROXIES=1, production's default).
PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ensure_wrk() -> str:
    """Debian's wrk: installed with apt-get when missing and we are root, else a clear stop."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing Debian's wrk (apt-get install -y wrk)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("This benchmark drives the server with wrk: apt-get install -y wrk")


def fresh_database() -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def start_s3() -> tuple[Any, dict[str, str]]:
    """moto's S3 server on loopback and a bucket; the AWS_* variables that point the app at it."""
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"rekindle-bench-api-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106  (moto accepts any)
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=bucket)
    env = {
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_S3_ADDRESSING_STYLE": "path",
    }
    return server, env


def production_environment(folder: Path) -> dict[str, str]:
    namespace = f"rekindle-bench-api-{uuid.uuid4().hex[:8]}"
    return {
        "DEBUG": "false",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
        "REDIS_URL": REDIS_URL,
        "DRAMATIQ_REDIS_NAMESPACE": namespace,
        "FLEET_NAMESPACE": namespace,
        "REKINDLE_ENGINE": "local",
        "REKINDLE_VAR_DIR": str(folder),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
    }


def make_job() -> tuple[str, str]:
    """A job with three restore attempts and a succeeded animation with a paid HD result: (id, token)."""
    from rekindle.testing.factories import (
        AnimationAttemptFactory,
        JobFactory,
        RestoreAttemptFactory,
        token_of,
    )

    job = JobFactory.create()
    first = RestoreAttemptFactory.create(job=job, succeeded=True)
    RestoreAttemptFactory.create(job=job, failed=True)
    RestoreAttemptFactory.create(job=job, succeeded=True)
    AnimationAttemptFactory.create(job=job, restore=first, succeeded=True, hd_ready=True)
    return str(job.pk), token_of(job)


def test_client_headers(token: str) -> dict[str, str]:
    return {"X-Job-Token": token, **PROXY_HEADERS}


def count_queries(job_id: str, token: str) -> tuple[int, list[str], int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.get(f"/api/v1/jobs/{job_id}", headers=test_client_headers(token))  # warm
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/jobs/{job_id}", headers=test_client_headers(token))
    assert response.status_code == 200, response.content[:300]
    return len(captured), [query["sql"] for query in captured.captured_queries], len(response.content)


# --- Load through gunicorn ----------------------------------------------------


def start_server(env: dict[str, str], port: int, workers: int, worker_class: str) -> subprocess.Popen[bytes]:
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "rekindle.asgi:application",
        "--worker-class",
        worker_class,
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "60",
        "--access-logfile",
        "/dev/null",
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_serving(url: str, headers: dict[str, str]) -> None:
    import requests

    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not answer 200 at {url}")
        time.sleep(0.3)


def run_wrk(wrk: str, url: str, headers: dict[str, str], seconds: int, connections: int) -> str:
    command = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout


def parse_wrk(output: str) -> dict[str, str]:
    found = {"rps": re.search(r"Requests/sec:\s+([\d.]+)", output)}
    for percent in ("50", "75", "90", "99"):
        found[f"p{percent}"] = re.search(rf"^\s+{percent}%\s+(\S+)", output, re.MULTILINE)
    found["requests"] = re.search(r"(\d+) requests in", output)
    found["non2xx"] = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["errors"] = re.search(r"Socket errors: (.*)", output)
    return {name: (match.group(1) if match else "0") for name, match in found.items()}


def workers_cpu_seconds(master: int) -> float:
    """User + system CPU seconds of gunicorn's workers so far (Linux /proc), the master's children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def bench_load(args: argparse.Namespace, env: dict[str, str], job_id: str, token: str) -> None:
    wrk = ensure_wrk()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}"
    headers = {"X-Job-Token": token, **PROXY_HEADERS}
    server = start_server(env, port, args.workers, args.worker_class)
    try:
        wait_until_serving(url, headers)
        run_wrk(wrk, url, headers, args.warmup, args.connections)
        before = load_average()
        runs = []
        for _ in range(args.runs):
            cpu = workers_cpu_seconds(server.pid)
            run = parse_wrk(run_wrk(wrk, url, headers, args.duration, args.connections))
            run["cpu_ms"] = f"{(workers_cpu_seconds(server.pid) - cpu) / max(1, int(run['requests'])) * 1000:.2f}"
            runs.append(run)
        after = load_average()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(
        f"gunicorn rekindle.asgi:application, {args.workers} x {args.worker_class}; "
        f"wrk -t2 -c{args.connections}, {args.duration} s a run after {args.warmup} s of warm-up"
    )
    for number, run in enumerate(runs, 1):
        print(
            f"  run {number}: {run['rps']} requests/s ({run['requests']} requests), latency p50 {run['p50']} "
            f"p75 {run['p75']} p90 {run['p90']} p99 {run['p99']}; workers' CPU {run['cpu_ms']} ms a request; "
            f"non-2xx {run['non2xx']}; "
            f"socket errors: {run['errors'] if run['errors'] != '0' else 'none'}"
        )
    rates = [float(run["rps"]) for run in runs]
    print(f"  median {statistics.median(rates):.1f} requests/s; load average before {before}, after {after}")


# --- In-process profile -------------------------------------------------------


def timed_middleware(settings_middleware: list[str], totals: dict[str, float]) -> list[str]:
    """The MIDDLEWARE list with each entry wrapped in a shim that adds its call's time to ``totals``."""
    from django.utils.module_loading import import_string

    module = sys.modules[__name__]
    wrapped = []
    for index, path in enumerate(settings_middleware):
        factory = import_string(path)

        def shim(get_response: Callable[[Any], Any], factory: Any = factory, path: str = path) -> Callable[[Any], Any]:
            instance = factory(get_response)

            def call(request: Any) -> Any:
                started = time.perf_counter()
                try:
                    return instance(request)
                finally:
                    totals[path] += time.perf_counter() - started

            return call

        shim.sync_capable = True  # type: ignore[attr-defined]
        shim.async_capable = False  # type: ignore[attr-defined]
        name = f"_timed_middleware_{index}"
        setattr(module, name, shim)
        wrapped.append(f"{__name__}.{name}")
        totals[path] = 0.0
    return wrapped


async def asgi_requests(path: str, token: str, count: int, profiler: Any) -> None:
    """``count`` GETs of ``path`` handed to the ASGI application as uvicorn would (the HTTP parsing left out)."""
    from rekindle.asgi import application

    headers = [(b"host", b"127.0.0.1"), (b"x-job-token", token.encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in PROXY_HEADERS.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def one() -> int:
        sent: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if done.is_set():
                await asyncio.sleep(3600)
            done.set()
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await application(dict(scope), receive, send)
        return int(sent[0]["status"])

    for _ in range(50):
        assert await one() == 200
    # pyinstrument samples the thread it starts in: start it in the request threads (one, for
    # this run: WEB_REQUEST_THREADS=1), where the middleware and the view run.
    (lane,) = application.request_threads._idle
    lane.submit(profiler.start).result()
    started = time.perf_counter()
    for _ in range(count):
        await one()
    wall = time.perf_counter() - started
    lane.submit(profiler.stop).result()
    print(f"{count} GETs through rekindle.asgi's application in this process: {wall / count * 1e6:.0f} us a request")


def bench_profile(args: argparse.Namespace, job_id: str, token: str) -> None:
    from django.conf import settings
    from django.test import Client, override_settings
    from pyinstrument import Profiler

    url = f"/api/v1/jobs/{job_id}"
    headers = test_client_headers(token)
    middleware = list(settings.MIDDLEWARE)
    totals: dict[str, float] = {}
    with override_settings(MIDDLEWARE=timed_middleware(middleware, totals)):
        client = Client()
        for _ in range(50):
            client.get(url, headers=headers)
        for path in totals:
            totals[path] = 0.0
        started, cpu = time.perf_counter(), time.thread_time()
        for _ in range(args.requests):
            response = client.get(url, headers=headers)
            assert response.status_code == 200
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
    n = args.requests
    print(
        f"{n} GETs through the test client, every middleware timed: {wall / n * 1e6:.0f} us a request "
        f"({cpu / n * 1e6:.0f} us of CPU)"
    )
    print(f"  {'middleware':<60} {'own us':>8} {'incl. us':>9}")
    for index, path in enumerate(middleware):
        inner = totals[middleware[index + 1]] if index + 1 < len(middleware) else 0.0
        print(f"  {path:<60} {(totals[path] - inner) / n * 1e6:8.1f} {totals[path] / n * 1e6:9.1f}")
    print(f"  {'URL resolving, DRF and the view':<60} {totals[middleware[-1]] / n * 1e6 if middleware else 0:8.1f}")
    print(
        f"  {'the test client and the handler outside the middleware':<60} "
        f"{(wall - totals[middleware[0]]) / n * 1e6:8.1f}"
    )

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    asyncio.run(asgi_requests(url, token, n, profiler))
    print(profiler.output_text(unicode=True, color=False, show_all=args.show_all))
    if args.flat:
        from pyinstrument.renderers import ConsoleRenderer

        flat = ConsoleRenderer(unicode=True, flat=True, time="percent_of_total")
        print("\n".join(profiler.output(flat).splitlines()[: args.flat]))
    if args.html:
        Path(args.html).write_text(profiler.output_html())
        print(f"pyinstrument's page: {args.html}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk run")
    parser.add_argument("--runs", type=int, default=2, help="wrk runs, one after the other")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of wrk before the measured runs")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's uvicorn workers")
    parser.add_argument(
        "--worker-class",
        default="uvicorn_worker.UvicornWorker",
        help="the Dockerfile's (HTTP parsed by httptools); uvicorn_worker.UvicornH11Worker parses with h11",
    )
    parser.add_argument(
        "--storage", choices=("s3", "local"), default="s3", help="s3: moto, presigned URLs; local: media URLs"
    )
    parser.add_argument("--profile", action="store_true", help="middleware times and pyinstrument, in-process")
    parser.add_argument("--requests", type=int, default=2000, help="requests of --profile")
    parser.add_argument("--html", default="", help="with --profile: write pyinstrument's page here")
    parser.add_argument("--show-sql", action="store_true")
    parser.add_argument("--flat", type=int, default=0, help="with --profile: also the N functions with most own time")
    parser.add_argument("--show-all", action="store_true", help="with --profile: every frame of the tree")
    args = parser.parse_args()

    if args.profile:
        os.environ["WEB_REQUEST_THREADS"] = "1"
    else:
        ensure_wrk()
    folder = Path(tempfile.mkdtemp(prefix="rekindle-bench-api-"))
    s3, s3_env = start_s3() if args.storage == "s3" else (None, {})
    env = production_environment(folder) | s3_env
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rekindle.settings"
    fresh_database()
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("collectstatic", "--noinput", verbosity=0)  # WhiteNoise serves STATIC_ROOT with DEBUG off
        job_id, token = make_job()
        queries, sql, size = count_queries(job_id, token)
        print(f"load average {load_average()}; job {job_id}; answer {size} bytes; {queries} queries a request")
        if args.show_sql:
            for statement in sql:
                print(f"  {statement}")
        if args.profile:
            bench_profile(args, job_id, token)
        else:
            bench_load(args, env, job_id, token)
    finally:
        drop_database()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
