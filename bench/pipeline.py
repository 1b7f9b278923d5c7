"""The restore pipeline end to end, measured by hand: API -> Redis -> worker -> ComfyUI stand-in -> S3.

    .venv/bin/python bench/pipeline.py [--restores 50] [--exec-seconds 0.2] [--poll-ms 100] [--no-wakeup]

Starts its own parts: a database ``rekindle_bench`` on the local PostgreSQL (created and
migrated), a Dramatiq namespace of its own on the local Redis, moto's S3 server, one
ComfyUI stand-in whose sampler takes a fixed time, and one ``rundramatiq`` worker process.
Then it uploads a photo and asks for N restores through the API (Django's test client,
in this process), one after the other, each waiting for its result to be stored, and reports:

- end to end: from the API's 202 to the attempt's ``finished_at`` (result stored in S3);
- overhead: end to end minus the stand-in's own execution (its history's execution_start
  to execution_success), i.e. what our code, Redis, PostgreSQL and S3 add (target <= 50 ms median);
- enqueue to start: from the API's 202 to the worker's claim (``started_at``); negative when the
  worker claims the attempt before the client has read the 202 (the message leaves on commit,
  inside the request).

The worker is woken by the notice ``rekindle.broker.WakingRedisBroker`` publishes with each
message; ``--no-wakeup`` sends with Dramatiq's plain ``RedisBroker`` instead, so the worker only
finds it at its next idle poll (``--poll-ms`` sets that ceiling).

One at a time on purpose: this measures latency, not throughput (the node runs one prompt at a time).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "rekindle_bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def describe(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<22} median {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 0.95):7.1f} ms   "
        f"min {min(ms):7.1f} ms   max {max(ms):7.1f} ms"
    )


def ensure_database() -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restores", type=int, default=50)
    parser.add_argument("--exec-seconds", type=float, default=0.2)
    parser.add_argument(
        "--poll-ms",
        type=int,
        default=None,
        help="the worker's idle Redis poll ceiling (dramatiq_worker_timeout); default: what manage.py sets (100)",
    )
    parser.add_argument(
        "--no-wakeup",
        action="store_true",
        help="send with Dramatiq's plain RedisBroker (no wake-up notice): the worker finds messages by polling",
    )
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from rekindle.testing.comfyui_fixtures import StandinNode

    ensure_database()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    bucket = f"rekindle-bench-{uuid.uuid4().hex[:8]}"
    node = StandinNode(exec_seconds=args.exec_seconds).start()
    namespace = f"rekindle-bench-{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
        "REDIS_URL": REDIS_URL,
        "DRAMATIQ_REDIS_NAMESPACE": namespace,
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_S3_ADDRESSING_STYLE": "path",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "REKINDLE_ENGINE": "comfyui",
        "COMFYUI_URLS": node.url,
        "COMFYUI_AFFINITY_WAIT_SECONDS": "0",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "THROTTLE_RESTORE_IP_RATE": "100000/hour",
        "THROTTLE_UPLOAD_IP_RATE": "100000/hour",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rekindle.settings"

    import boto3
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from jobs.models import AttemptStatus
    from rekindle.testing.pipeline import WorkerProcess
    from restoration.models import RestoreAttempt

    call_command("migrate", verbosity=0)
    if args.no_wakeup:
        from dramatiq.brokers.redis import RedisBroker

        from rekindle.testing.pipeline import BrokerSwap

        BrokerSwap(RedisBroker(url=REDIS_URL, namespace=namespace))  # type: ignore[no-untyped-call]
    boto3.client(
        "s3",
        endpoint_url=env["AWS_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)
    emails = Path(f"/tmp/rekindle-bench-emails-{namespace}")
    emails.mkdir(exist_ok=True)
    worker = WorkerProcess(
        {
            **os.environ,
            **env,
            "DJANGO_SETTINGS_MODULE": "rekindle.settings",
            "PYTHONPATH": str(ROOT),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(emails),
            "LOG_LEVEL": "INFO",  # the worker says it is ready at INFO
            **({"dramatiq_worker_timeout": str(args.poll_ms)} if args.poll_ms is not None else {}),
        },
        threads=2,
    ).start()
    try:
        photo = io.BytesIO()
        Image.new("RGB", (640, 480), (170, 130, 90)).save(photo, "JPEG", quality=90)
        photo.seek(0)
        photo.name = "photo.jpg"
        client = Client()
        # secure: production settings redirect plain HTTP to HTTPS.
        uploaded = client.post("/api/v1/jobs/upload", {"image": photo, "email": "bench@example.com"}, secure=True)
        assert uploaded.status_code == 201, uploaded.content[:300]
        created = uploaded.json()
        headers = {"HTTP_X_JOB_TOKEN": created["token"]}
        end_to_end: list[float] = []
        overhead: list[float] = []
        to_start: list[float] = []
        for index in range(args.restores + 1):
            response = client.post(
                f"/api/v1/jobs/{created['id']}/restore",
                {"parameters": {"megapixels": 0.25, "steps": 4}},
                content_type="application/json",
                secure=True,
                **headers,
            )
            accepted = datetime.now(UTC)
            assert response.status_code == 202, response.content
            attempt_id = response.json()["id"]
            attempt: Any = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                attempt = RestoreAttempt.objects.get(pk=attempt_id)
                if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED):
                    break
                time.sleep(0.002)
            assert attempt.status == AttemptStatus.SUCCEEDED, attempt.error_message
            if index == 0:
                continue  # warm-up: first connections, model "load"
            history = requests.get(f"{node.url}/history/{attempt.prompt_id}", timeout=5).json()[attempt.prompt_id]
            stamps = {kind: data["timestamp"] for kind, data in history["status"]["messages"]}
            execution = (stamps["execution_success"] - stamps["execution_start"]) / 1000
            total = (attempt.finished_at - accepted).total_seconds()
            end_to_end.append(total)
            overhead.append(total - execution)
            to_start.append((attempt.started_at - accepted).total_seconds())
        print(
            f"{args.restores} restores, one at a time, stand-in sampler {args.exec_seconds * 1000:.0f} ms, "
            f"worker poll ceiling {f'{args.poll_ms} ms' if args.poll_ms else 'as manage.py sets it'}, "
            f"{'no wake-up (polling only)' if args.no_wakeup else 'wake-up on enqueue'}"
        )
        print(describe("end to end", end_to_end))
        print(describe("overhead", overhead))
        print(describe("enqueue to start", to_start))
    finally:
        worker.stop()
        node.stop()
        moto.stop()
        import dramatiq

        dramatiq.get_broker().flush_all()


if __name__ == "__main__":
    main()
