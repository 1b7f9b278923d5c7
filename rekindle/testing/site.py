"""The whole product as ``make run`` serves it, in a subprocess: for the browser tests and the benchmarks.

:class:`EmbeddedSite` runs ``manage.py migrate`` and then ``manage.py serve`` (uvicorn, ASGI) on a free
port with the embedded defaults: a SQLite file, local files, the Dramatiq worker in the same process,
the local CPU engine. Its emails go to files the caller reads (``emails()``), its log to a file
(``log()``). Nothing of the test process's own settings reaches it except ``SECRET_KEY``, so a test
can sign email links the site accepts (``jobs.access.job_link_access``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from rekindle.testing.pipeline import free_port

ROOT = Path(__file__).resolve().parents[2]

# Settings of the test process that must not leak into the site (it picks its own).
_DROPPED = ("DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL", "COMFYUI_URLS")


class EmbeddedSite:
    def __init__(self, folder: Path, *, wsgi: bool = False, **env: str) -> None:
        # wsgi: gunicorn's sync worker on rekindle.wsgi (one thread that keeps its database connection
        # between requests) instead of `manage.py serve`.
        self.wsgi = wsgi
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mail_dir = folder / "mail"
        self.log_path = folder / "site.log"
        self.env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
        self.env.update(
            {
                "DEBUG": "true",  # as `make run`: media served by the app, development defaults
                "REKINDLE_VAR_DIR": str(folder / "var"),
                "MEDIA_ROOT": str(folder / "media"),
                "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
                "REKINDLE_ENGINE": "local",
                "SITE_URL": self.url,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "EMAIL_FILE_PATH": str(self.mail_dir),
                "THROTTLE_UPLOAD_RATE": "off",
                "THROTTLE_UPLOAD_IP_RATE": "off",
                "THROTTLE_RESTORE_RATE": "off",
                "THROTTLE_RESTORE_IP_RATE": "off",
                "THROTTLE_ANIMATE_RATE": "off",
                "THROTTLE_ANIMATE_IP_RATE": "off",
                "PYTHONUNBUFFERED": "1",
                **env,
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    def media_root(self) -> Path:
        return Path(self.env["MEDIA_ROOT"])

    def start(self, timeout: float = 60.0) -> EmbeddedSite:
        self.folder.mkdir(parents=True, exist_ok=True)
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True, timeout=120)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._server_command(manage),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the site stopped at start:\n{self.log()}")
            try:
                if requests.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the site did not answer within {timeout:g} s:\n{self.log()}")

    def _server_command(self, manage: list[str]) -> list[str]:
        if not self.wsgi:
            return [*manage, "serve", "--port", str(self.port)]
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        # The sync worker, named: gunicorn.conf.py in the working directory sets uvicorn's.
        return [
            gunicorn,
            "rekindle.wsgi:application",
            "--worker-class",
            "sync",
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{self.port}",
        ]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def emails(self) -> list[str]:
        if not self.mail_dir.exists():
            return []
        return [path.read_text(errors="replace") for path in sorted(self.mail_dir.iterdir())]

    def upload(self, photo: bytes, *, email: str = "family@example.com", restore: bool = True) -> dict[str, Any]:
        """Upload through the API as any client would: the job's answer, with its token."""
        response = requests.post(
            self.url + "/api/v1/jobs/upload",
            files={"image": ("photo.jpg", photo, "image/jpeg")},
            data={"email": email, "restore": "true" if restore else "false"},
            timeout=30,
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def job(self, job_id: str, token: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/v1/jobs/{job_id}", headers={"X-Job-Token": token}, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
