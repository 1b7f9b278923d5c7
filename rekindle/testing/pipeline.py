"""End-to-end pipeline support: a real Redis broker in the test process and real worker processes.

Fixtures (registered by the root ``conftest.py``; the benchmark uses the classes directly):

- ``redis_broker``: the test process sends to a ``WakingRedisBroker`` (the settings' broker)
  under a namespace of its own (``rekindle-test-<hex>``) on the machine's Redis, with every
  actor re-bound to it;
  the stub broker and the actors' bindings come back afterwards and the namespace is flushed.
- ``pipeline_worker``: ``pipeline_worker(**env)`` starts ``manage.py rundramatiq`` as a
  subprocess on the pytest test database (committed rows: use transactional tests), the
  same Redis namespace, the ``s3_bucket`` bucket and ComfyUI stand-in nodes, writing its
  emails to a folder the test reads (``worker.emails()``). ``worker.kill()`` is kill -9 of
  its whole process group.
- ``pipeline_web``: ``pipeline_web(**env)`` starts ``manage.py serve`` (uvicorn, ASGI) as a
  subprocess on the worker's environment (same database, Redis namespace, bucket), so requests
  go through a real server whose background work goes to the workers; its log is kept like a
  worker's (``web.log()``).
- ``RedisServer``: a redis-server of a test's own on a free port, which the test may stop
  and start again (never the shared one on 6379).
- ``WebServer``: the web process as the image runs it (gunicorn with uvicorn workers and
  ``gunicorn.conf.py``) on a free loopback port, with the environment a test gives it.
"""

from __future__ import annotations

import email
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any, Self

import dramatiq
import pytest
import redis
from django.conf import settings
from django.db import connection
from dramatiq.brokers.redis import RedisBroker

from rekindle.broker import WakingRedisBroker
from rekindle.testing.ci import skip_unless_ci

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
WORKER_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], *, timeout: float = 180.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy, and return that; fail the test after ``timeout``.

    The timeout only says when to give up on something that is not coming: generous, because the
    two cores may be shared with other work (an HD run on the stand-in then takes a minute).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {timeout:g}s for {what or condition}")
        time.sleep(interval)


class BrokerSwap:
    """Points every declared actor (and ``dramatiq.get_broker()``) at another broker until ``restore()``."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.previous = dramatiq.get_broker()
        self.broker = broker
        self.actors = [self.previous.get_actor(name) for name in self.previous.get_declared_actors()]
        for actor in self.actors:
            broker.declare_actor(actor)
            actor.broker = broker
        dramatiq.set_broker(broker)

    def restore(self) -> None:
        for actor in self.actors:
            actor.broker = self.previous
        dramatiq.set_broker(self.previous)


def make_redis_broker(url: str, namespace: str) -> RedisBroker:
    """The broker the settings give a process with Redis (wake-ups included), on ``namespace``."""
    # Sending never waits long: a Redis that is down must fail the send quickly.
    return WakingRedisBroker(url=url, namespace=namespace, socket_connect_timeout=1.0, socket_timeout=5.0)


class RedisServer:
    """A redis-server process of the test's own, with no persistence, that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            skip_unless_ci("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_for(lambda: self._pings(client), timeout=10, what=f"redis-server on {self.port}")
        return self

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class WorkerProcess:
    """One ``manage.py rundramatiq`` process group, started with the environment a test gives it."""

    def __init__(self, env: dict[str, str], *, threads: int = 4, shutdown_timeout_ms: int = 2000) -> None:
        self.env = env
        self.threads = threads
        self.shutdown_timeout_ms = shutdown_timeout_ms
        self.log_path = Path(tempfile.mkstemp(prefix="rekindle-worker-", suffix=".log")[1])
        self.email_dir = Path(env["EMAIL_FILE_PATH"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            str(self.threads),
            "--worker-shutdown-timeout",
            str(self.shutdown_timeout_ms),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, timeout=WORKER_START_TIMEOUT, interval=0.2, what=f"the worker (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the worker exited at start:\n{self.log()}")
        return "Worker process is ready for action" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9 of the worker and every process it forked: what a crashed machine looks like."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM to the worker's main process, as Kubernetes does to PID 1; returns at once.

        Only the main process: it forwards the signal to its worker processes, and a worker
        process that gets a second SIGTERM (one to the whole group) is killed at once by Dramatiq.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def emails(self) -> list[Message]:
        """Every email the worker sent (Django's file backend: one file per connection, messages in a row)."""
        messages: list[Message] = []
        for path in sorted(self.email_dir.glob("*.log")):
            for chunk in path.read_text().split("-" * 79):
                if chunk.strip():
                    messages.append(email.message_from_string(chunk.strip()))
        return messages


class _ServerProcess:
    """A web server process of the test's, as a process group on a free loopback port, its output in a file."""

    # Where the server answers once it is up.
    ready_path = "/healthz"

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = Path(tempfile.mkstemp(prefix="rekindle-web-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._ready, timeout=WORKER_START_TIMEOUT, interval=0.2, what=f"the web server (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        import requests

        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the web server exited at start:\n{self.log()}")
        try:
            return requests.get(self.url + self.ready_path, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class WebProcess(_ServerProcess):
    """One ``manage.py serve`` process (uvicorn) on a free port, its output kept in a file like a worker's."""

    ready_path = "/api/schema/"

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.env = {
            **env,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SITE_URL": self.url,
            # Plain HTTP on loopback: no redirect to HTTPS.
            "SECURE_SSL_REDIRECT": "false",
            "PYTHONUNBUFFERED": "1",
            **{f"THROTTLE_{scope}_RATE": "off" for scope in ("UPLOAD", "RESTORE", "ANIMATE", "LINK")},
            **{f"THROTTLE_{scope}_IP_RATE": "off" for scope in ("UPLOAD", "RESTORE", "ANIMATE", "LINK")},
        }

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "serve", "--port", str(self.port)]


class WebServer(_ServerProcess):
    """``gunicorn rekindle.asgi:application -c gunicorn.conf.py`` on a free loopback port, as a process group."""

    def __init__(self, env: dict[str, str], *, workers: int = 2) -> None:
        super().__init__(env)
        self.workers = workers

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "rekindle.asgi:application",
            "--config",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
        ]


def database_url() -> str:
    """The URL of the database the tests run on (pytest-django's test database, by name)."""
    from rekindle.testing.services import POSTGRES_URL

    base = POSTGRES_URL.rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


@pytest.fixture
def redis_namespace() -> str:
    return f"rekindle-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_broker(redis_namespace: str) -> Iterator[RedisBroker]:
    from rekindle.testing.services import REDIS_URL

    broker = make_redis_broker(REDIS_URL, redis_namespace)
    swap = BrokerSwap(broker)
    try:
        yield broker
    finally:
        swap.restore()
        broker.flush_all()
        broker.close()


@pytest.fixture
def worker_env(redis_namespace: str, s3_bucket: Any, comfy_settings: list[Any], tmp_path: Path) -> dict[str, str]:
    """The environment of a worker process for this test (``comfy_settings``: two fresh stand-in nodes)."""
    from rekindle.testing.services import REDIS_URL

    email_dir = tmp_path / "emails"
    email_dir.mkdir()
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DJANGO_"))},
        **s3_bucket.env,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "DRAMATIQ_REDIS_NAMESPACE": redis_namespace,
        # The fleet's node state too: apart from every other test's.
        "FLEET_NAMESPACE": redis_namespace,
        "SECRET_KEY": str(settings.SECRET_KEY),
        "DEBUG": "false",
        "REKINDLE_ENGINE": "comfyui",
        "COMFYUI_URLS": ",".join(node.url for node in comfy_settings),
        "COMFYUI_SOCKET_QUIET_SECONDS": "1",
        "COMFYUI_POLL_SECONDS": "0.1",
        "COMFYUI_NODE_BACKOFF_SECONDS": "0.5",
        "COMFYUI_NODE_BACKOFF_MAX_SECONDS": "2",
        "COMFYUI_SLOT_WAIT_SECONDS": "30",
        "COMFYUI_AFFINITY_WAIT_SECONDS": "0",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(email_dir),
        "RETRY_MIN_BACKOFF_MS": "100",
        "RETRY_MAX_BACKOFF_MS": "500",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def pipeline_worker(worker_env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    """``pipeline_worker(threads=4, **env_overrides)``: a started worker process; all are stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(*, threads: int = 4, shutdown_timeout_ms: int = 2000, **overrides: str) -> WorkerProcess:
        worker = WorkerProcess(
            {**worker_env, **overrides}, threads=threads, shutdown_timeout_ms=shutdown_timeout_ms
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def pipeline_web(worker_env: dict[str, str]) -> Iterator[Callable[..., WebProcess]]:
    """``pipeline_web(**env_overrides)``: a started web server on the workers' environment; all stopped afterwards."""
    started: list[WebProcess] = []

    def start(**overrides: str) -> WebProcess:
        web = WebProcess({**worker_env, **overrides}).start()
        started.append(web)
        return web

    yield start
    for web in started:
        web.stop()
