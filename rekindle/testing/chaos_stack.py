"""The production-shaped stack of the chaos harness, each part its own process on a free loopback port.

PostgreSQL (``initdb`` into a temporary folder, ``pg_ctl``), ``redis-server``, moto's S3 server
behind :class:`FaultyS3Proxy` (a small HTTP proxy that answers 500/503 or slowly while told to),
ComfyUI stand-ins, gunicorn with uvicorn workers, ``rundramatiq`` workers and the cron loops.
None of them is the machine's shared PostgreSQL or Redis, so every one can be killed.
``bench/chaos.py`` drives it; ``rekindle.testing.chaos_ledger`` reads what it left.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it is truthy and return it; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting {timeout:g}s for {what}")
        time.sleep(interval)


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it (rundramatiq forks its worker processes)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(child) for child in children)
    return total


# --- PostgreSQL -------------------------------------------------------------------------------------


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary folder, which can be stopped fast or immediately."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/rekindle"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)

    def init(self) -> PostgresServer:
        for folder in (self.data, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            for path in (self.data, self.socket_dir, self.log):
                shutil.chown(path, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "CREATE DATABASE rekindle")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


# --- Redis ------------------------------------------------------------------------------------------


class RedisProcess:
    """A redis-server of its own, no persistence; SIGTERM or kill -9 it and start it again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_until(lambda: self._pings(client), timeout=15, what=f"redis-server on {self.port}")
        return self

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
        self.process = None


# --- S3 with faults ---------------------------------------------------------------------------------


@dataclass
class S3Faults:
    """What the proxy does now: answer ``error_rate`` of requests with 500/503, delay each by ``delay``.

    ``refuse_puts_under`` and ``refusals_left`` aim the errors instead: the next
    ``refusals_left`` writes (PUT) under that key prefix are answered 500, nothing else.
    """

    error_rate: float = 0.0
    delay: float = 0.0
    refuse_puts_under: str = ""
    refusals_left: int = 0
    errors: int = 0
    delayed: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311  (a seeded schedule, not a secret)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, method: str = "GET", key: str = "") -> tuple[int, float]:
        """The status to answer instead (0: forward) and the delay, for one request for ``key``."""
        with self.lock:
            status = 0
            if self.refusals_left and method == "PUT" and key.startswith(self.refuse_puts_under):
                status = 500
                self.refusals_left -= 1
                self.errors += 1
            elif self.error_rate and self.rng.random() < self.error_rate:
                status = self.rng.choice((500, 503))
                self.errors += 1
            if self.delay:
                self.delayed += 1
            return status, self.delay


_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>chaos</RequestId></Error>"
)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultyS3Proxy:
    """An HTTP proxy in front of moto that can answer S3's 500 InternalError / 503 SlowDown, or slowly."""

    def __init__(self, upstream_port: int, faults: S3Faults) -> None:
        self.upstream_port = upstream_port
        self.faults = faults
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                # Path-style addressing: /<bucket>/<key>?<query>.
                key = urllib.parse.unquote(self.path.split("?", 1)[0]).lstrip("/").partition("/")[2]
                status, delay = proxy.faults.draw(self.command, key)
                if delay:
                    time.sleep(delay)
                if status:
                    code, message = (
                        ("InternalError", "We encountered an internal error. Please try again.")
                        if status == 500
                        else ("SlowDown", "Please reduce your request rate.")
                    )
                    data = _S3_ERROR.format(code=code, message=message).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, name="s3-proxy", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Django processes -------------------------------------------------------------------------------


class ManagedProcess:
    """One process (group) of the stack: started with the stack's environment, killed or stopped on demand."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> ManagedProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_group(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """kill -9 of the process and everything it forked."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=15)

    def terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM (a deploy, a scale-down), then kill -9 if it has not left within ``timeout``."""
        if not self.alive():
            return
        assert self.process is not None
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


class WorkerProcess(ManagedProcess):
    """``manage.py rundramatiq``: ready when it says so in its log."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, *, threads: int) -> None:
        command = manage(
            "rundramatiq", "--processes", "1", "--threads", str(threads), "--worker-shutdown-timeout", "10000"
        )
        super().__init__(name, command, env, log_dir)
        self._ready_marks = 0

    def start_ready(self, timeout: float = 90.0) -> WorkerProcess:
        before = self.log().count("Worker process is ready for action")
        self.start()
        wait_until(
            lambda: self.log().count("Worker process is ready for action") > before or self._exited(),
            timeout=timeout,
            what=f"{self.name} (log: {self.log_path})",
            interval=0.2,
        )
        if not self.alive():
            raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
        return self

    def _exited(self) -> bool:
        return not self.alive()


def web_command(port: int, workers: int) -> list[str]:
    """The production command of the image (Dockerfile), on loopback."""
    return [
        str(Path(sys.executable).parent / "gunicorn"),
        "rekindle.asgi:application",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--timeout",
        "60",
        "--access-logfile",
        "-",
    ]


def scratch_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="rekindle-chaos-"))
