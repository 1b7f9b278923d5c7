"""What ``/readyz`` checks: the database, Redis, storage and the processing engine, each within a bound.

Each check runs in a daemon thread of its own and is given ``READINESS_TIMEOUT_SECONDS``; one
that has not answered by then is reported unavailable (``timed out``) and left to finish on its
own, so a dependency that hangs (a firewall dropping packets) cannot hold the probe. Clients are
made with that bound as their own timeout too, so such threads end soon after.

What an error says is for the operator reading the probe: the kind of failure, never a password,
a token or a node's address (the nodes page in the admin names the nodes).

django-health-check was considered and not used: its checks run one after the other with no bound
on each (a hung database holds the probe as long as the driver waits), its storage check writes and
deletes a file through the storage on every probe (an S3 PUT and DELETE per probe), it has no check
of a ComfyUI fleet or a RunPod endpoint, and its answer's shape is its own; the four checks below
are short and answer in the shape the deployment's probes read.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import connections

Check = Callable[[float], None]


class NotReady(Exception):
    """A check's finding, in words fit for the probe's answer."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "unavailable", "latency_ms": round(self.latency_ms, 1)}
        if self.error:
            body["error"] = self.error
        return body


# --- The checks -------------------------------------------------------------------


def check_database(timeout: float) -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        raise NotReady(f"the database cannot be reached ({type(exc).__name__})") from exc
    finally:
        # This thread's own connection: the next probe runs in another thread.
        connection.close()


@cache
def _redis_client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check_redis(timeout: float) -> None:
    import redis

    try:
        _redis_client(settings.REDIS_URL, timeout).ping()
    except redis.RedisError as exc:
        raise NotReady(f"Redis cannot be reached ({type(exc).__name__})") from exc


@cache
def _s3_client(endpoint: str | None, region: str, style: str, timeout: float) -> Any:
    """A client of the bucket's own, with the probe's timeout and no retries (the storage's retries for minutes)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
        config=Config(
            signature_version="s3v4",
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            s3=cast(Any, {"addressing_style": style}),
        ),
    )


def check_storage(timeout: float) -> None:
    """On S3 one HEAD of the bucket (it exists and these credentials may use it); locally, the media folder
    takes a file."""
    if settings.AWS_STORAGE_BUCKET_NAME:
        from botocore.exceptions import BotoCoreError, ClientError

        client = _s3_client(settings.AWS_S3_ENDPOINT_URL, settings.AWS_S3_REGION_NAME, _addressing_style(), timeout)
        try:
            client.head_bucket(Bucket=settings.AWS_STORAGE_BUCKET_NAME)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise NotReady(f"the bucket answered {status or 'an error'}") from exc
        except BotoCoreError as exc:
            raise NotReady(f"the storage cannot be reached ({type(exc).__name__})") from exc
        return
    try:
        # Made on first use, as FileSystemStorage would when saving.
        Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.MEDIA_ROOT, prefix=".readyz-"):
            pass
    except OSError as exc:
        raise NotReady(f"the media folder does not take files ({exc.strerror or type(exc).__name__})") from exc


def _addressing_style() -> str:
    style = str(settings.AWS_S3_ADDRESSING_STYLE)
    return style if style in ("path", "virtual") else "auto"


def check_engine(timeout: float) -> None:
    """comfyui: at least one node up that passes the preflight of every configured workflow; runpod: the
    endpoint's health call; local: this machine is the engine, so always ready."""
    engine = settings.REKINDLE_ENGINE
    if engine == "comfyui":
        _check_comfyui()
    elif engine == "runpod":
        from rekindle.engines.runpod import RunPodEngine

        reports = RunPodEngine.from_settings().health()
        if not reports or not reports[0].healthy:
            raise NotReady("the RunPod endpoint's health call failed")


def configured_workflows() -> list[str]:
    return [
        settings.REKINDLE_WORKFLOW_RESTORE,
        settings.REKINDLE_WORKFLOW_ANIMATE_PREVIEW,
        settings.REKINDLE_WORKFLOW_ANIMATE_HD,
    ]


def _check_comfyui() -> None:
    from rekindle.engines.comfyui import get_pool

    workflows = configured_workflows()
    report = get_pool().health(workflows)
    up = [node for node in report if node.healthy]
    if not up:
        raise NotReady(f"no ComfyUI node is up (0 of {len(report)}; see /admin/comfyui-nodes/)")
    runnable = [node for node in up if all(not node.preflight.get(name) for name in workflows)]
    if not runnable:
        failing = sorted({name for node in up for name in workflows if node.preflight.get(name)})
        raise NotReady(
            f"{len(up)} of {len(report)} ComfyUI nodes up, but none passes the preflight of {', '.join(failing)}"
        )


# --- Running them -------------------------------------------------------------------


def checks() -> dict[str, Check]:
    """The checks this deployment needs: Redis only when it is configured."""
    found: dict[str, Check] = {"database": check_database}
    if settings.REDIS_URL:
        found["redis"] = check_redis
    found["storage"] = check_storage
    found["engine"] = check_engine
    return found


def run_checks(selected: dict[str, Check] | None = None, *, timeout: float | None = None) -> list[CheckResult]:
    """Every check at once, each in its own thread and bounded by ``timeout``; results in the checks' order."""
    bound = float(timeout if timeout is not None else settings.READINESS_TIMEOUT_SECONDS)
    selected = checks() if selected is None else selected
    results: dict[str, CheckResult] = {}
    threads: list[tuple[str, threading.Thread, float]] = []
    lock = threading.Lock()

    def run(name: str, check: Check, started: float) -> None:
        try:
            check(bound)
            result = CheckResult(name, True, _ms_since(started))
        except NotReady as exc:
            result = CheckResult(name, False, _ms_since(started), str(exc))
        except Exception as exc:
            result = CheckResult(name, False, _ms_since(started), f"the check failed ({type(exc).__name__})")
        with lock:
            results.setdefault(name, result)

    for name, check in selected.items():
        started = time.monotonic()
        thread = threading.Thread(target=run, args=(name, check, started), name=f"readyz-{name}", daemon=True)
        thread.start()
        threads.append((name, thread, started))
    deadline = time.monotonic() + bound
    for name, thread, started in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
        with lock:
            results.setdefault(name, CheckResult(name, False, _ms_since(started), f"timed out after {bound:g}s"))
    return [results[name] for name in selected]


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
