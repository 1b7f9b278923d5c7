"""Stripe webhooks processed per second, measured by hand: signed events -> gunicorn -> dj-stripe -> billing.

    .venv/bin/python bench/webhooks.py [--events 400] [--clients 4] [--workers 2]

Starts its own parts: a database ``rekindle_bench_webhooks`` on the local PostgreSQL (made
afresh and migrated), a Dramatiq namespace of its own on the local Redis (the HD runs and
dj-stripe's syncs the webhooks queue wait there; no worker takes them), the Stripe stub
(only dj-stripe's one ``GET /v1/account`` reaches it) and gunicorn with ``--workers`` sync
workers serving ``rekindle.wsgi``. It makes N animations with a pending purchase each, then
``--clients`` threads post one ``checkout.session.completed`` per purchase, signed with
Stripe's scheme, over HTTP, as fast as the server answers. Every event is one full
processing: dj-stripe's request record and signature check, its Event, our PaymentEvent,
the purchase paid, ``hd_paid`` set, the HD run created and its message sent to Redis on
commit. Then the same events again (replays: dj-stripe finds the Event and stops).

Reported: events per second (wall clock of the whole batch), per event the median and p95
of the request's latency as the client saw it, and the web workers' CPU time per event
(from /proc: PostgreSQL's and Redis's own are not in it), which depends less on what else
the machine is doing. Load generator and server share the
machine's cores, as they do in the figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "rekindle_bench_webhooks"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def fresh_database() -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_batch(url: str, payloads: list[str], secret: str, clients: int) -> tuple[float, list[float]]:
    """Post every payload (signed just before it goes); the batch's wall time and each request's latency."""
    import stripe

    local = threading.local()
    latencies: list[float] = []

    def post(payload: str) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        header = stripe.WebhookSignature.generate_signature_header(payload, secret)
        started = time.perf_counter()
        response = session.post(
            url, data=payload, headers={"Content-Type": "application/json", "Stripe-Signature": header}, timeout=30
        )
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:300]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, payloads))
    return time.perf_counter() - started, latencies


def server_cpu_seconds(master: int) -> float:
    """User + system CPU seconds of gunicorn's workers so far (Linux /proc), the master's children."""
    ticks = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def describe(name: str, count: int, wall: float, latencies: list[float]) -> str:
    ms = [value * 1000 for value in latencies]
    return (
        f"{name:<10} {count} events in {wall:6.2f} s: {count / wall:7.1f} events/s   "
        f"per event p50 {statistics.median(ms):6.1f} ms   p95 {percentile(ms, 0.95):6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4, help="threads posting at once")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    args = parser.parse_args()

    from rekindle.testing.stripe_stub import StripeStub

    stub = StripeStub().start()
    namespace = f"rekindle-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
        "REDIS_URL": REDIS_URL,
        "DRAMATIQ_REDIS_NAMESPACE": namespace,
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "STRIPE_SECRET_KEY": stub.secret_key,
        "STRIPE_WEBHOOK_SECRET": stub.webhook_secret,
        "STRIPE_API_BASE": stub.url,
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rekindle.settings"
    fresh_database()

    import django

    django.setup()
    from django.core.management import call_command

    from billing.models import PaymentEvent, Purchase, PurchaseStatus
    from billing.services import checkout_session_params
    from rekindle.testing.factories import AnimationAttemptFactory, PurchaseFactory

    call_command("migrate", verbosity=0)  # writes the webhook endpoint row from STRIPE_WEBHOOK_SECRET
    payloads = []
    for _ in range(args.events + 20):
        animation = AnimationAttemptFactory.create(succeeded=True)
        purchase = PurchaseFactory.create(animation=animation, email=animation.job.email)
        session = {
            "id": purchase.stripe_session_id,
            "object": "checkout.session",
            "amount_total": 900,
            "currency": "usd",
            "customer_email": purchase.email,
            "expires_at": int(time.time()) + 3600,
            "livemode": False,
            "metadata": checkout_session_params(animation.job, animation)["metadata"],
            "mode": "payment",
            "payment_intent": f"pi_test_{uuid.uuid4().hex[:24]}",
            "payment_status": "paid",
            "status": "complete",
        }
        payloads.append(json.dumps(stub.event("checkout.session.completed", session)))

    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "rekindle.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}/stripe/webhook/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(url, timeout=10)  # 405: serving
                break
            except requests.RequestException:
                time.sleep(0.2)
        warm, batch = payloads[:20], payloads[20:]
        run_batch(url, warm, stub.webhook_secret, args.clients)  # first connections, dj-stripe's account lookup
        cpu_start = server_cpu_seconds(server.pid)
        wall, latencies = run_batch(url, batch, stub.webhook_secret, args.clients)
        cpu_new = server_cpu_seconds(server.pid)
        replay_wall, replay_latencies = run_batch(url, batch, stub.webhook_secret, args.clients)
        cpu_replay = server_cpu_seconds(server.pid)

        paid = Purchase.objects.filter(status=PurchaseStatus.PAID).count()
        assert paid == len(payloads), f"{paid} of {len(payloads)} purchases paid"
        assert PaymentEvent.objects.count() == len(payloads)
        print(
            f"{len(batch)} checkout.session.completed events, {args.clients} clients, "
            f"gunicorn {args.workers} sync workers, PostgreSQL, Redis; Stripe calls during the batch: "
            f"{len(stub.requests) - 1}"
        )
        print(describe("new", len(batch), wall, latencies))
        print(describe("replayed", len(batch), replay_wall, replay_latencies))
        print(
            f"web workers' CPU per event: new {(cpu_new - cpu_start) / len(batch) * 1000:.1f} ms, "
            f"replayed {(cpu_replay - cpu_new) / len(batch) * 1000:.1f} ms; load average "
            f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        stub.stop()
        import dramatiq

        dramatiq.get_broker().flush_all()


if __name__ == "__main__":
    main()
