"""Chaos run: the production-shaped stack under a bounded load and a seeded schedule of faults, then the ledger.

    .venv/bin/python bench/chaos.py --seed N [--short] [--jobs N] [--minutes M] [--json PATH]

Starts, each its own process on free loopback ports: PostgreSQL (``initdb`` into a temporary
folder), ``redis-server``, moto's S3 server behind a fault-injecting proxy, 3 ComfyUI stand-ins,
gunicorn with uvicorn workers (the image's command), 2 ``rundramatiq`` workers, and the cron loops
``requeue_stuck_attempts`` and ``reconcile_payments`` (against the Stripe stub, which also takes
the checkouts; payments come back as signed webhooks). The environment is production's:
``DEBUG=false``, ``REKINDLE_ENGINE=comfyui``, S3 through django-storages, Redis, PostgreSQL.

Clients drive jobs through the HTTP API (upload with restore, more restores, select, animate,
buy the HD result, delete, some of them while the attempts run) while the schedule injects, in an
order the seed draws: kill -9 and SIGTERM of a worker (restarted), Redis stopped by SIGTERM and by
kill -9 for 15 s, PostgreSQL restarted in fast and immediate mode, a stand-in killed mid-run and
restarted, the stand-ins' own faults (dropped socket, silent socket, execution error, out of
memory), S3 answering 500/503 and slowly for a while, a job deleted while its attempt runs.
Then the work drains, ``prune_orphan_files`` runs, and the ledger is printed (table, and JSON
with ``--json``); the exit code is 1 when it shows any violation (``rekindle.testing.chaos_ledger``).
``--short`` is the CI run: some dozens of jobs and each fault once.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from rekindle.testing import chaos_ledger  # noqa: E402
from rekindle.testing.chaos_stack import (  # noqa: E402
    FaultyS3Proxy,
    ManagedProcess,
    PostgresServer,
    RedisProcess,
    S3Faults,
    WorkerProcess,
    free_port,
    manage,
    rss_bytes,
    scratch_root,
    wait_until,
    web_command,
)

SMALL_RESTORE = {"megapixels": 0.25, "steps": 4}
SMALL_ANIMATION = {"seconds": 1, "fps": 8, "width": 256, "height": 256}
REDIS_OUTAGE_SECONDS = 15.0
# Each sampler node of the stand-ins: a restore takes about 1.5 s on the node, long enough to be deleted mid-run.
STANDIN_EXEC_SECONDS = 1.0
# How long a client waits for its attempt before it moves on (the ledger still counts the attempt).
CLIENT_PATIENCE_SECONDS = 60.0
FAULT_KINDS = (
    "worker_kill9",
    "worker_sigterm",
    "redis_sigterm",
    "redis_kill9",
    "postgres_fast",
    "postgres_immediate",
    "standin_kill",
    "standin_drop_socket",
    "standin_silent_socket",
    "standin_execution_error",
    "standin_oom",
    "s3_errors",
    "s3_slow",
    "delete_running",
)


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Stack:
    """Every process of the run, and the environment they share."""

    def __init__(self, seed: int, workers: int = 2, web_workers: int = 2) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        from rekindle.testing.comfyui_fixtures import StandinNode
        from rekindle.testing.stripe_stub import StripeStub

        self.root = scratch_root()
        self.logs = self.root / "logs"
        self.logs.mkdir()
        log(f"scratch and logs in {self.root}")
        self.postgres = PostgresServer(self.root).init()
        self.redis = RedisProcess().start()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.moto_port = self.moto.get_host_and_port()[1]
        self.s3_faults = S3Faults(rng=random.Random(seed))
        self.s3_proxy = FaultyS3Proxy(self.moto_port, self.s3_faults)
        self.bucket = f"rekindle-chaos-{uuid.uuid4().hex[:8]}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.moto_port}",
            region_name="us-east-1",
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos",  # noqa: S106  (moto takes any credentials)
        )
        self.s3.create_bucket(Bucket=self.bucket)
        self.stripe = StripeStub().start()
        self.standins = [StandinNode(exec_seconds=STANDIN_EXEC_SECONDS).start() for _ in range(3)]
        for node in self.standins:
            node.clear_record()
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.env = self._env()
        self.worker_threads = 8
        self.workers = [
            WorkerProcess(f"worker-{n + 1}", self.env, self.logs, threads=self.worker_threads) for n in range(workers)
        ]
        self.web = ManagedProcess("web", web_command(self.web_port, web_workers), self.env, self.logs)
        self.crons = [
            ManagedProcess(
                "requeue_stuck_attempts",
                manage("requeue_stuck_attempts", "--loop", "--interval", "5"),
                self.env,
                self.logs,
            ),
            ManagedProcess(
                "reconcile_payments", manage("reconcile_payments", "--loop", "--interval", "20"), self.env, self.logs
            ),
        ]
        self.restarts: dict[str, int] = defaultdict(int)
        self.rss: dict[str, list[int]] = {}
        self._supervising = threading.Event()
        self.paused: set[str] = set()

    def _env(self) -> dict[str, str]:
        from rekindle.testing.stripe_stub import SECRET_KEY, WEBHOOK_SECRET

        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_", "AWS_"))}
        return {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "rekindle.settings",
            "DEBUG": "false",
            "SECRET_KEY": "chaos-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SITE_URL": self.web_url,
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "DRAMATIQ_REDIS_NAMESPACE": "chaos",
            "FLEET_NAMESPACE": "chaos",
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_S3_ENDPOINT_URL": self.s3_proxy.url,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": "chaos",
            "AWS_SECRET_ACCESS_KEY": "chaos",
            "AWS_S3_ADDRESSING_STYLE": "path",
            "REKINDLE_ENGINE": "comfyui",
            "COMFYUI_URLS": ",".join(node.url for node in self.standins),
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": self.stripe.url,
            "STRIPE_HD_AMOUNT": "900",
            "STRIPE_HD_CURRENCY": "usd",
            # The load is one client address: the per-address limits would refuse it, which is not under test.
            **{
                f"THROTTLE_{scope}_{who}RATE": "100000/hour"
                for scope in ("UPLOAD", "RESTORE", "ANIMATE", "LINK")
                for who in ("", "IP_")
            },
            "LOG_LEVEL": "INFO",
        }

    # --- life ---------------------------------------------------------------------------------------

    def start(self) -> None:
        log("migrating")
        import subprocess

        subprocess.run(manage("migrate", "--noinput"), cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.web.start()
        for worker in self.workers:
            worker.start_ready()
        for cron in self.crons:
            cron.start()
        wait_until(self._web_answers, timeout=90, what=f"gunicorn on {self.web_port} (log {self.web.log_path})")
        time.sleep(2)
        for worker in self.workers:
            self.rss[worker.name] = [rss_bytes(worker.pid), 0]
        self._supervising.set()
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        log("stack up")

    def _web_answers(self) -> bool:
        try:
            return requests.get(f"{self.web_url}/api/schema/", headers=FORWARDED, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _supervise(self) -> None:
        """What systemd or an orchestrator does: a process that died on its own is started again."""
        while self._supervising.is_set():
            for process in [self.web, *self.crons, *self.workers]:
                if process.name in self.paused or process.alive():
                    continue
                self.restarts[process.name] += 1
                log(f"{process.name} exited on its own; starting it again")
                process.start()
            time.sleep(1)

    def restart_worker(self, worker: WorkerProcess, how: Callable[[], None]) -> None:
        self.paused.add(worker.name)
        try:
            how()
            worker.start_ready()
        finally:
            self.paused.discard(worker.name)

    def stop(self) -> None:
        self._supervising.clear()
        for worker in self.workers:
            if worker.alive():
                self.rss[worker.name][1] = rss_bytes(worker.pid)
        for process in [*self.crons, *self.workers, self.web]:
            process.terminate(timeout=15)
        for node in self.standins:
            node.stop()
        self.redis.stop()
        self.postgres.stop("fast")
        self.stripe.stop()
        self.s3_proxy.close()
        self.moto.stop()


FORWARDED = {"X-Forwarded-Proto": "https"}


def photo(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(
        "RGB", (rng.randint(160, 480), rng.randint(120, 360)), tuple(rng.randint(0, 255) for _ in range(3))
    )
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Api:
    """The HTTP API as a client uses it, every answer counted in the ledger's request log."""

    def __init__(self, base: str, log_: chaos_ledger.RequestLog, started: float) -> None:
        self.base = base
        self.log = log_
        self.started = started
        self.session = requests.Session()
        # A fresh connection per request: a kept one that the server closes while idle would show as a dropped
        # request that no server ever saw (the keep-alive race), which is not what the ledger measures.
        self.session.headers.update({**FORWARDED, "Connection": "close"})

    def call(
        self, method: str, route: str, path: str, *, token: str = "", tries: int = 4, **kwargs: Any
    ) -> requests.Response | None:
        """One request, retried as a good client does: after Retry-After (429, 503), after a dropped connection."""
        headers = {**kwargs.pop("headers", {}), **({"X-Job-Token": token} if token else {})}
        for _ in range(tries):
            try:
                response = self.session.request(method, self.base + path, headers=headers, timeout=30, **kwargs)
            except requests.RequestException as exc:
                self.log.record(
                    route, None, retry_after=None, at=time.monotonic() - self.started, detail=str(exc)[:200]
                )
                time.sleep(1)
                continue
            retry_after = response.headers.get("Retry-After")
            detail = response.text[:200] if response.status_code >= 500 else ""
            self.log.record(
                route, response.status_code, retry_after=retry_after, at=time.monotonic() - self.started, detail=detail
            )
            if response.status_code in (429, 503) and retry_after:
                time.sleep(min(float(retry_after) if retry_after.isdigit() else 5.0, 5.0))
                continue
            return response
        return None


class Load:
    """Clients, each working through a job: upload and restore, maybe more, select, animate, buy HD, delete."""

    def __init__(self, stack: Stack, rng: random.Random, jobs: int, clients: int, started: float) -> None:
        self.stack = stack
        self.rng = rng
        self.jobs = jobs
        self.clients = clients
        self.started = started
        self.requests = chaos_ledger.RequestLog()
        self.created: dict[str, set[str]] = defaultdict(set)
        self.deleted: list[chaos_ledger.DeletedJob] = []
        self.live: dict[str, tuple[str, list[str]]] = {}
        # Jobs whose client is waiting for an attempt now: job id -> token.
        self.waiting: dict[str, str] = {}
        self.lock = threading.Lock()
        self.next_job = 0
        self.stop_at: float | None = None
        self.purchases = 0
        self.errors: list[str] = []

    def take(self) -> int | None:
        with self.lock:
            if self.next_job >= self.jobs or (self.stop_at is not None and time.monotonic() > self.stop_at):
                return None
            self.next_job += 1
            return self.next_job

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._client, args=(n,), name=f"client-{n}", daemon=True)
            for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _client(self, n: int) -> None:
        api = Api(self.stack.web_url, self.requests, self.started)
        while (number := self.take()) is not None:
            with self.lock:
                rng = random.Random(self.rng.random())
            try:
                self.job(api, rng, number)
            except Exception:
                self.errors.append(traceback.format_exc())

    def _job_state(self, api: Api, job_id: str, token: str) -> dict[str, Any] | None:
        response = api.call("GET", "GET /jobs/{id}", f"/api/v1/jobs/{job_id}", token=token)
        if response is None or response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def _wait(
        self,
        api: Api,
        job_id: str,
        token: str,
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        delete_after: float | None = None,
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        begun = time.monotonic()
        with self.lock:
            self.waiting[job_id] = token
        try:
            return self._poll(api, job_id, token, done, deadline, begun, delete_after)
        finally:
            with self.lock:
                self.waiting.pop(job_id, None)

    def _poll(
        self,
        api: Api,
        job_id: str,
        token: str,
        done: Callable[[dict[str, Any]], bool],
        deadline: float,
        begun: float,
        delete_after: float | None,
    ) -> dict[str, Any] | None:
        while time.monotonic() < deadline:
            if delete_after is not None and time.monotonic() - begun >= delete_after:
                self.delete(api, job_id, token)
                return None
            state = self._job_state(api, job_id, token)
            if state is not None and done(state):
                return state
            time.sleep(0.5)
        return None

    def delete(self, api: Api, job_id: str, token: str) -> bool:
        with self.lock:
            entry = self.live.pop(job_id, None)
        if entry is None:
            return False
        response = api.call("DELETE", "DELETE /jobs/{id}", f"/api/v1/jobs/{job_id}", token=token)
        if response is not None and response.status_code in (204, 404):
            with self.lock:
                self.deleted.append(chaos_ledger.DeletedJob(job_id, time.time(), list(entry[1])))
            return True
        if response is not None and response.status_code >= 500:
            # The job may be gone all the same: the ledger checks its keys if its row is.
            with self.lock:
                self.deleted.append(chaos_ledger.DeletedJob(job_id, time.time(), list(entry[1])))
        with self.lock:
            self.live[job_id] = entry
        return False

    def _note(self, kind: str, job_id: str, attempt_id: str) -> None:
        with self.lock:
            self.created[kind].add(attempt_id)
            if job_id in self.live:
                self.live[job_id][1].append(attempt_id)

    def job(self, api: Api, rng: random.Random, number: int) -> None:
        uploaded = api.call(
            "POST",
            "POST /jobs/upload",
            "/api/v1/jobs/upload",
            files={"image": (f"photo-{number}.jpg", photo(rng), "image/jpeg")},
            data={"email": f"family{number}@example.com", "restore": "true"},
        )
        if uploaded is None or uploaded.status_code != 201:
            return
        body = uploaded.json()
        job_id, token = body["id"], body["token"]
        with self.lock:
            self.live[job_id] = (token, [])
        for attempt in body.get("restore_attempts", []):
            self._note("restore", job_id, attempt["id"])

        def restores_done(state: dict[str, Any]) -> bool:
            return all(a["status"] not in ("queued", "running") for a in state["restore_attempts"])

        early_delete = rng.random() < 0.2
        state = self._wait(
            api,
            job_id,
            token,
            restores_done,
            timeout=CLIENT_PATIENCE_SECONDS,
            delete_after=rng.uniform(0.3, 2.0) if early_delete else None,
        )
        if state is None:
            return
        if rng.random() < 0.35:
            answer = api.call(
                "POST",
                "POST /jobs/{id}/restore",
                f"/api/v1/jobs/{job_id}/restore",
                token=token,
                json={"parameters": {**SMALL_RESTORE, "seed": rng.randint(1, 10**6)}},
            )
            if answer is not None and answer.status_code == 202:
                self._note("restore", job_id, answer.json()["id"])
                state = self._wait(api, job_id, token, restores_done, timeout=CLIENT_PATIENCE_SECONDS) or state
        succeeded = [a for a in state["restore_attempts"] if a["status"] == "succeeded"]
        if not succeeded:
            self._maybe_delete(api, rng, job_id, token, 0.3)
            return
        chosen = rng.choice(succeeded)
        if rng.random() < 0.5:
            api.call(
                "POST",
                "POST /jobs/{id}/select-restore",
                f"/api/v1/jobs/{job_id}/select-restore",
                token=token,
                json={"restore_id": chosen["id"]},
            )
        if rng.random() < 0.6:
            answer = api.call(
                "POST",
                "POST /jobs/{id}/animate",
                f"/api/v1/jobs/{job_id}/animate",
                token=token,
                json={"restore_id": chosen["id"], "parameters": SMALL_ANIMATION},
            )
            if answer is None or answer.status_code != 202:
                return
            animation_id = answer.json()["id"]
            self._note("animation", job_id, animation_id)

            def animation_done(state: dict[str, Any]) -> bool:
                return any(
                    a["id"] == animation_id and a["status"] not in ("queued", "running")
                    for a in state["animation_attempts"]
                )

            late_delete = rng.random() < 0.1
            state = self._wait(
                api,
                job_id,
                token,
                animation_done,
                timeout=CLIENT_PATIENCE_SECONDS,
                delete_after=rng.uniform(0.5, 3.0) if late_delete else None,
            )
            if state is None:
                return
            animation = next(a for a in state["animation_attempts"] if a["id"] == animation_id)
            if animation["status"] == "succeeded" and rng.random() < 0.5:
                self.buy_hd(api, job_id, token, animation_id)
        self._maybe_delete(api, rng, job_id, token, 0.25)

    def _maybe_delete(self, api: Api, rng: random.Random, job_id: str, token: str, chance: float) -> None:
        if rng.random() < chance:
            self.delete(api, job_id, token)

    def buy_hd(self, api: Api, job_id: str, token: str, animation_id: str) -> None:
        from rekindle.testing.stripe_stub import signature_header

        answer = api.call(
            "POST",
            "POST /jobs/{id}/animations/{aid}/checkout",
            f"/api/v1/jobs/{job_id}/animations/{animation_id}/checkout",
            token=token,
        )
        if answer is None or answer.status_code != 201:
            return
        session = self.stack.stripe.pay(answer.json()["session_id"])
        event = self.stack.stripe.event("checkout.session.completed", session)
        payload = json.dumps(event)
        api.call(
            "POST",
            "POST /stripe/webhook/",
            "/stripe/webhook/",
            data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature_header(payload)},
        )
        with self.lock:
            self.purchases += 1

        def hd_done(state: dict[str, Any]) -> bool:
            return any(
                a["id"] == animation_id and a["hd_status"] in ("succeeded", "failed", "canceled")
                for a in state["animation_attempts"]
            )

        self._wait(api, job_id, token, hd_done, timeout=2 * CLIENT_PATIENCE_SECONDS)


class Faults:
    """The seeded schedule, injected one after the other while the load runs."""

    def __init__(self, stack: Stack, load: Load, rng: random.Random, started: float) -> None:
        self.stack = stack
        self.load = load
        self.rng = rng
        self.started = started
        self.done: list[dict[str, Any]] = []
        self.last_end = started

    def plan(self, rounds: int) -> list[str]:
        kinds: list[str] = []
        for _ in range(rounds):
            batch = list(FAULT_KINDS)
            self.rng.shuffle(batch)
            kinds.extend(batch)
        return kinds

    def run(self, kinds: list[str], *, gap: tuple[float, float], until: float | None) -> None:
        for kind in kinds:
            if until is not None and time.monotonic() > until:
                break
            time.sleep(self.rng.uniform(*gap))
            at = time.monotonic() - self.started
            log(f"fault {kind}")
            try:
                detail = getattr(self, kind)() or ""
            except Exception as exc:
                detail = f"injection failed: {exc!r}"
                log(detail)
            self.last_end = time.monotonic()
            self.done.append(
                {
                    "kind": kind,
                    "at": round(at, 1),
                    "seconds": round(self.last_end - self.started - at, 1),
                    "detail": detail,
                }
            )

    # --- the faults ----------------------------------------------------------------------------------

    def _worker(self) -> WorkerProcess:
        return self.rng.choice(self.stack.workers)

    def worker_kill9(self) -> str:
        worker = self._worker()
        self.stack.restart_worker(worker, worker.kill)
        return worker.name

    def worker_sigterm(self) -> str:
        worker = self._worker()
        self.stack.restart_worker(worker, lambda: worker.terminate(timeout=30))
        return worker.name

    def _redis_outage(self, sig: int) -> str:
        self.stack.redis.stop(sig)
        time.sleep(REDIS_OUTAGE_SECONDS)
        self.stack.redis.start()
        return f"{REDIS_OUTAGE_SECONDS:g}s"

    def redis_sigterm(self) -> str:
        return self._redis_outage(signal.SIGTERM)

    def redis_kill9(self) -> str:
        return self._redis_outage(signal.SIGKILL)

    def _postgres_restart(self, mode: str) -> str:
        self.stack.postgres.stop(mode)
        time.sleep(2)
        self.stack.postgres.start()
        return mode

    def postgres_fast(self) -> str:
        return self._postgres_restart("fast")

    def postgres_immediate(self) -> str:
        return self._postgres_restart("immediate")

    def standin_kill(self) -> str:
        """Kill a stand-in while it runs one of our prompts (or any, after a few seconds), restart it."""

        def busy() -> Any:
            for node in self.stack.standins:
                try:
                    if requests.get(node.url + "/queue", timeout=2).json().get("queue_running"):
                        return node
                except requests.RequestException:
                    continue
            return None

        try:
            node = wait_until(busy, timeout=15, what="a stand-in running a prompt", interval=0.2)
        except TimeoutError:
            node = self.rng.choice(self.stack.standins)
        node.kill()
        time.sleep(3)
        node.start()
        return str(node.url)

    def _standin_fault(self, **faults: Any) -> str:
        for node in self.stack.standins:
            try:
                node.set_faults(**faults)
            except requests.RequestException:
                continue
        return ",".join(f"{k}={v}" for k, v in faults.items())

    def standin_drop_socket(self) -> str:
        return self._standin_fault(drop_socket=1)

    def standin_silent_socket(self) -> str:
        return self._standin_fault(silent_socket=1)

    def standin_execution_error(self) -> str:
        return self._standin_fault(execution_error=1)

    def standin_oom(self) -> str:
        return self._standin_fault(oom=1)

    def s3_errors(self) -> str:
        self.stack.s3_faults.error_rate = 0.5
        time.sleep(10)
        self.stack.s3_faults.error_rate = 0.0
        return f"{self.stack.s3_faults.errors} answers 500/503"

    def s3_slow(self) -> str:
        self.stack.s3_faults.delay = 2.0
        time.sleep(10)
        self.stack.s3_faults.delay = 0.0
        return f"{self.stack.s3_faults.delayed} answers 2s late"

    def delete_running(self) -> str:
        """Delete a job whose attempt is running now (waits a little for one)."""
        api = Api(self.stack.web_url, self.load.requests, self.started)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.load.lock:
                candidates = list(self.load.waiting.items())
            self.rng.shuffle(candidates)
            for job_id, token in candidates:
                if time.monotonic() > deadline:
                    break
                state = self.load._job_state(api, job_id, token)
                if state is None:
                    continue
                running = [
                    a
                    for kind in ("restore_attempts", "animation_attempts")
                    for a in state[kind]
                    if a["status"] == "running"
                ]
                if running and self.load.delete(api, job_id, token):
                    return f"job {job_id} ({len(running)} running)"
            time.sleep(0.5)
        return "no running attempt found"


def drain(started_after: float, window: float) -> float | None:
    """Seconds from the last fault until nothing is queued or running; None if that did not come within ``window``."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        try:
            if chaos_ledger.in_flight_count() == 0:
                return time.monotonic() - started_after
        except Exception as exc:  # the database may still be coming back
            log(f"drain check failed: {exc!r}")
            from django.db import close_old_connections

            close_old_connections()
        time.sleep(1)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--short", action="store_true", help="the CI run: some dozens of jobs, each fault once")
    parser.add_argument("--jobs", type=int, default=None, help="jobs to drive (short: 36, full: 300)")
    parser.add_argument("--minutes", type=float, default=None, help="how long the load and the faults last (full: 10)")
    parser.add_argument("--clients", type=int, default=None, help="clients at once (6)")
    parser.add_argument("--drain-seconds", type=float, default=None, help="the drain window (short: 90, full: 240)")
    parser.add_argument("--json", default="", help="write the ledger here as JSON")
    args = parser.parse_args()
    jobs = args.jobs or (36 if args.short else 300)
    clients = args.clients or 6
    window = args.drain_seconds or (90.0 if args.short else 240.0)
    minutes = args.minutes if args.minutes is not None else (None if args.short else 10.0)
    rng = random.Random(args.seed)

    stack = Stack(args.seed)
    # This process reads the run's database for the drain and the ledger, as staff would.
    os.environ.update({**stack.env, "DB_CONN_MAX_AGE": "0", "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    # One line per S3 request from moto's server drowns the run's own lines.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    exit_code = 2
    try:
        stack.start()
        started = time.monotonic()
        load = Load(stack, random.Random(rng.random()), jobs, clients, started)
        faults = Faults(stack, load, random.Random(rng.random()), started)
        until = None if minutes is None else started + minutes * 60
        if until is not None:
            load.stop_at = until
        clients_running = load.run()
        time.sleep(5)
        if args.short:
            faults.run(faults.plan(1), gap=(1.0, 3.0), until=None)
        else:
            faults.run(faults.plan(100), gap=(5.0, 15.0), until=until)
        log("faults over; waiting for the clients")
        load.stop_at = time.monotonic() if minutes is None else until
        clients_deadline = time.monotonic() + window
        for thread in clients_running:
            thread.join(timeout=max(0.1, clients_deadline - time.monotonic()))
        log("draining")
        drained = drain(faults.last_end, window)
        log(f"drained in {drained}" if drained is not None else "did not drain")
        time.sleep(2)
        records = {node.url: node.prompt_record() for node in stack.standins}
        for worker in stack.workers:
            if worker.alive():
                stack.rss[worker.name][1] = rss_bytes(worker.pid)
        ledger = chaos_ledger.collect(
            requests_log=load.requests,
            created_ids=load.created,
            deleted=load.deleted,
            records=records,
            s3_client=stack.s3,
            bucket=stack.bucket,
            prune=lambda: chaos_ledger.prune_with_grace(0),
            drain_seconds=drained,
            rss={name: (values[0], values[1]) for name, values in stack.rss.items()},
            faults=faults.done,
            restarts=stack.restarts,
            meta={
                "seed": args.seed,
                "mode": "short" if args.short else "full",
                "jobs": load.next_job,
                "purchases": load.purchases,
                "seconds": round(time.monotonic() - started),
                "client_errors": load.errors[:5],
                "logs": str(stack.logs),
                "finished": chaos_ledger.utc_now(),
            },
        )
        print(chaos_ledger.render(ledger), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(ledger, indent=2, default=str))
        exit_code = 1 if chaos_ledger.violations(ledger) else 0
    finally:
        stack.stop()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
