"""/healthz and /readyz: the process, then each dependency, taken away and given back.

The readiness test runs the web server as the image does (gunicorn, ``gunicorn.conf.py``) on
dependencies of the test's own, each on a free port, so it can stop them: a PostgreSQL made with
``initdb`` and run with ``pg_ctl`` (never the machine's shared one), a redis-server, moto's S3
server with a bucket, and two ComfyUI stand-ins.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import requests
from botocore.config import Config
from django.test import Client
from pytest_django.fixtures import Settings

from rekindle.testing.ci import skip_unless_ci
from rekindle.testing.comfyui_fixtures import StandinNode
from rekindle.testing.pipeline import REPO_ROOT, RedisServer, WebServer, free_port, wait_for


def test_it_answers_healthz_whatever_the_host_without_the_database_or_a_session(settings: Settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["api.rekindle.example"]
    # No django_db mark: pytest-django makes any database access here an error.
    # A load balancer probes by address, over plain HTTP.
    response = Client().get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "Set-Cookie" not in response.headers
    assert response["Cache-Control"] == "no-store"
    refused = Client().post("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert refused.status_code == 405
    assert refused.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_it_is_ready_on_the_embedded_defaults(settings: Settings) -> None:
    settings.ALLOWED_HOSTS = ["api.rekindle.example"]
    response = Client().get("/readyz", HTTP_HOST="10.1.2.3")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "storage", "engine"}  # no REDIS_URL: no Redis check
    assert all(check["status"] == "ok" and check["latency_ms"] >= 0 for check in body["checks"].values())


class OwnPostgres:
    """A PostgreSQL of the test's own: ``initdb`` into a temporary folder, ``pg_ctl`` on a free port.

    As root, it runs as the ``postgres`` user (PostgreSQL refuses root).
    """

    def __init__(self) -> None:
        for binary in ("initdb", "pg_ctl"):
            if shutil.which(binary) is None:
                skip_unless_ci(f"{binary} is not installed")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="rekindle-readyz-pg-"))
        self.data = self.folder / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        subprocess.run([*self.prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> OwnPostgres:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")
        wait_for(self._accepts, timeout=30, what="the test's PostgreSQL")
        return self

    def _accepts(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.prefix, "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], capture_output=True
            )
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnS3:
    """moto's S3 server on a port of the test's own, with one bucket; stopped and started again on that port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = f"readyz-{uuid.uuid4().hex[:8]}"
        self.server: Any = None

    def start(self) -> OwnS3:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        # A fresh server has no buckets: the bucket comes back with it.
        client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_S3_ADDRESSING_STYLE": "path",
        }


@pytest.fixture
def own_services() -> Iterator[dict[str, Any]]:
    started: list[Any] = []
    postgres = OwnPostgres()
    try:
        started.append(postgres.start())
        started.append(redis_server := RedisServer().start())
        started.append(s3 := OwnS3().start())
        nodes = [StandinNode().start(), StandinNode().start()]
        started.extend(nodes)
        yield {"postgres": postgres, "redis": redis_server, "s3": s3, "nodes": nodes}
    finally:
        for service in reversed(started):
            if service is not postgres:
                service.stop()
        postgres.remove()


def test_it_turns_unready_while_each_dependency_is_away_and_ready_when_it_is_back(
    own_services: dict[str, Any], tmp_path: Path
) -> None:
    postgres, redis_server, s3, nodes = (own_services[name] for name in ("postgres", "redis", "s3", "nodes"))
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "DJANGO_"))},
        **s3.env,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        "SECRET_KEY": "readyz-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        # Probes come by address and over plain HTTP: neither the host check nor the redirect may stop them.
        "ALLOWED_HOSTS": "api.rekindle.example",
        "SECURE_SSL_REDIRECT": "true",
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "DRAMATIQ_REDIS_NAMESPACE": f"readyz-{uuid.uuid4().hex[:8]}",
        "REKINDLE_ENGINE": "comfyui",
        "COMFYUI_URLS": ",".join(node.url for node in nodes),
        "FLEET_STATE": "local",
        "COMFYUI_PROBE_TIMEOUT_SECONDS": "1",
        "READINESS_TIMEOUT_SECONDS": "5",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    web = WebServer(env, workers=1).start()
    try:
        readyz = web.url + "/readyz"

        def answer() -> tuple[int, dict[str, Any], requests.Response]:
            response = requests.get(readyz, timeout=30)
            return response.status_code, response.json(), response

        status, body, _ = answer()
        assert status == 200, body
        assert set(body["checks"]) == {"database", "redis", "storage", "engine"}

        outages: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            ("database", postgres.stop, postgres.start),
            ("redis", redis_server.stop, redis_server.start),
            ("storage", s3.stop, s3.start),
            ("engine", lambda: [node.stop() for node in nodes], lambda: [node.start() for node in nodes]),
        ]
        for name, take_away, give_back in outages:
            take_away()
            status, body, response = answer()
            assert status == 503, (name, body)
            assert body["status"] == "unavailable"
            assert response.headers["Retry-After"].isdigit()
            assert body["checks"][name]["status"] == "unavailable"
            assert body["checks"][name]["error"]
            # Nothing internal in the words: no password, no node's address, no endpoint.
            assert "127.0.0.1" not in response.text
            assert [other for other, check in body["checks"].items() if check["status"] != "ok"] == [name]
            give_back()
            status, body, _ = wait_for(lambda: (got := answer())[0] == 200 and got, timeout=60, what=f"{name} back")
            assert body["status"] == "ok"
    finally:
        web.stop()
