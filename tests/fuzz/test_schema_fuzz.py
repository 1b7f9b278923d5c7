"""Schema fuzz: schemathesis generates requests from ``/api/schema/`` and sends them to a live server on PostgreSQL.

The server is uvicorn in a subprocess on a database of this test's own (created on the machine's
PostgreSQL and dropped afterwards), trusting a local Auth0 tenant's JWKS. Two passes, each with
every check on, a fixed seed and a bounded number of examples per operation:

- as the holder of a job's token (``X-Job-Token``, the job made by an upload here), with that
  job's id in every path, so the job's own operations are reached past the access check;
- signed in with an Auth0-shaped bearer token, every path parameter generated.

A server error, or an answer that breaks the schema (status, headers, content type, body) fails
the test with schemathesis' own report, which names the request to reproduce it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from PIL import Image

from rekindle.testing.auth0 import AUDIENCE, ISSUER, Auth0Tenant
from rekindle.testing.pipeline import free_port
from rekindle.testing.services import POSTGRES_URL
from rekindle.testing.stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub

pytestmark = [pytest.mark.postgres, pytest.mark.fuzz]

ROOT = Path(__file__).resolve().parents[2]
SEED = 1
MAX_EXAMPLES = 12
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.fixture(scope="module")
def fuzz_database() -> Iterator[str]:
    name = f"rekindle_fuzz_{uuid.uuid4().hex[:10]}"
    base = POSTGRES_URL.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tenant() -> Iterator[Auth0Tenant]:
    tenant = Auth0Tenant()
    yield tenant
    tenant.close()


@pytest.fixture(scope="module")
def stripe() -> Iterator[StripeStub]:
    stub = StripeStub().start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def live_server_url(
    fuzz_database: str, tenant: Auth0Tenant, stripe: StripeStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One server, on one database, for both passes."""
    tmp_path = tmp_path_factory.mktemp("fuzz-server")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_", "AWS_", "REDIS_"))},
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "rekindle.settings",
        # DEBUG on only so that the tenant's JWKS may be plain http on loopback (off, it must be https).
        "DEBUG": "true",
        "DATABASE_URL": fuzz_database,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "REKINDLE_VAR_DIR": str(tmp_path / "var"),
        "REKINDLE_ENGINE": "local",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "AUTH0_AUDIENCE": AUDIENCE,
        "AUTH0_ISSUER": ISSUER,
        "AUTH0_JWKS_URL": tenant.jwks_url,
        "AUTH0_EMAIL_CLAIM": "https://rekindle.example/email",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        # Payments on (against the Stripe stub), so checkout answers as in production, not 503 billing_disabled.
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe.url,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        **{
            f"THROTTLE_{scope}_{who}RATE": "off"
            for scope in ("UPLOAD", "RESTORE", "ANIMATE", "LINK")
            for who in ("", "IP_")
        },
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "rekindle.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/api/schema/", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"the server did not start:\n{(tmp_path / 'server.log').read_text()}")
        time.sleep(0.3)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def uploaded_job(url: str) -> tuple[str, str]:
    photo = io.BytesIO()
    Image.new("RGB", (96, 64), (180, 140, 90)).save(photo, "JPEG")
    response = requests.post(
        url + "/api/v1/jobs/upload",
        files={"image": ("photo.jpg", photo.getvalue(), "image/jpeg")},
        data={"email": "fuzz@example.com"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["token"]


# Any bytes are a schema-valid ``image``; the server may still find them unreadable (400), too small (400) or
# not an image it takes (415): those are the refusals the upload documents, not valid data refused.
UPLOAD_REFUSALS = """
[[operations]]
include-path = "/api/v1/jobs/upload"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 413, 415]
"""


def schemathesis_run(
    url: str, tmp_path: Path, name: str, *args: str, config: str = ""
) -> subprocess.CompletedProcess[str]:
    config_path = tmp_path / f"{name}.toml"
    config_path.write_text(config + UPLOAD_REFUSALS)
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(config_path),
        "run",
        url + "/api/schema/",
        "--url",
        url,
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        # The event stream stays open while an attempt is in flight: bounded, not a hang.
        "--exclude-path",
        "/api/v1/jobs/{job_id}/events",
        *args,
    ]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def report(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout[-20000:] + result.stderr[-5000:]


def test_it_keeps_to_its_schema_for_a_job_token_holder(live_server_url: str, tmp_path: Path) -> None:
    job_id, token = uploaded_job(live_server_url)
    result = schemathesis_run(
        live_server_url,
        tmp_path,
        "token",
        "--header",
        f"X-Job-Token: {token}",
        # The job is the one under test: deleting it would leave nothing to reach.
        "--exclude-method",
        "DELETE",
        config=f'[parameters]\n"path.job_id" = "{job_id}"\n',
    )
    print(report(result))
    assert result.returncode == 0, report(result)


def test_it_keeps_to_its_schema_for_a_signed_in_user(live_server_url: str, tenant: Auth0Tenant, tmp_path: Path) -> None:
    token = tenant.token_for("auth0|fuzz", **{"https://rekindle.example/email": "fuzz@example.com"})
    result = schemathesis_run(live_server_url, tmp_path, "bearer", "--header", f"Authorization: Bearer {token}")
    print(report(result))
    assert result.returncode == 0, report(result)
