"""The RunPod serverless engine: the same workflow JSON, run by an endpoint with the standard ComfyUI worker.

Protocol (RunPod's serverless API and runpod-workers/worker-comfyui):

- ``POST {base}/v2/{endpoint}/run`` with
  ``{"input": {"workflow": <API graph>, "images": [{"name", "image": <base64>}]}}`` and
  ``Authorization: Bearer <key>`` answers ``{"id", "status"}``. The worker uploads each image
  under its ``name``, which ``Workflow.build`` has put into the graph's LoadImage inputs.
- ``GET /v2/{endpoint}/status/{id}`` is polled with backoff: ``IN_QUEUE``, ``IN_PROGRESS``, then
  ``COMPLETED`` (``output``), ``FAILED`` (``error``), ``CANCELLED`` or ``TIMED_OUT``.
- Outputs: worker 5.x gives ``{"images": [{"filename", "type": "base64" | "s3_url", "data"}]}`` (videos
  from SaveVideo come in the same list); older workers gave ``{"message": <base64 or URL>}``.
  Bucket URLs are fetched without our API key.
- On timeout or cancel: ``POST /v2/{endpoint}/cancel/{id}``. Health: ``GET /v2/{endpoint}/health``.

FAILED is permanent (the worker ran the workflow and it failed); 5xx, 429, connection
errors, a lost job and TIMED_OUT are transient.
"""

from __future__ import annotations

import base64
import binascii
import logging
import mimetypes
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any, NoReturn

import requests

from rekindle.engines.base import (
    NO_HOOKS,
    CancelCheck,
    EngineCanceled,
    EngineOutput,
    EngineResult,
    NodeHealth,
    OutputKind,
    PermanentEngineError,
    ProgressCallback,
    RunHooks,
    RunRequest,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.workflows import Workflow, WorkflowParameterError, get_workflow

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp"}
# Status polls that may fail in a row (a blip at RunPod) before the run is given up as transient.
MAX_POLL_FAILURES = 5
# The longest single sleep, so a cancel request is noticed quickly whatever the poll interval.
CANCEL_CHECK_SECONDS = 0.2
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def poll_delays(first: float, maximum: float, factor: float = 1.5) -> Iterator[float]:
    """Seconds to wait before each status poll: growing by ``factor`` from ``first`` up to ``maximum``."""
    delay = first
    while True:
        yield delay
        delay = min(maximum, delay * factor)


class RunPodEngine:
    """Runs workflows on a RunPod serverless endpoint."""

    name = "runpod"

    def __init__(
        self,
        *,
        base_url: str,
        endpoint_id: str,
        api_key: str,
        poll_interval: float = 1.0,
        poll_max_interval: float = 10.0,
        request_timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        if not endpoint_id or not api_key:
            raise ValueError("RunPod needs an endpoint id and an API key")
        self.base_url = base_url.rstrip("/")
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.poll_interval = poll_interval
        self.poll_max_interval = max(poll_max_interval, poll_interval)
        self.request_timeout = request_timeout
        self.session = session or requests.Session()

    @classmethod
    def from_settings(cls) -> RunPodEngine:
        from django.conf import settings

        return cls(
            base_url=settings.RUNPOD_BASE_URL,
            endpoint_id=settings.RUNPOD_ENDPOINT_ID,
            api_key=settings.RUNPOD_API_KEY,
            poll_interval=settings.RUNPOD_POLL_INTERVAL,
            poll_max_interval=settings.RUNPOD_POLL_MAX_INTERVAL,
            request_timeout=settings.RUNPOD_REQUEST_TIMEOUT,
        )

    @property
    def node(self) -> str:
        return f"runpod:{self.endpoint_id}"

    # --- Engine protocol ---------------------------------------------------------------

    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
        hooks: RunHooks = NO_HOOKS,
    ) -> EngineResult:
        started = time.monotonic()
        deadline = started + request.timeout
        workflow = _workflow(request.workflow)
        payload = self._payload(workflow, request)

        def progress(percent: int) -> None:
            if on_progress is not None:
                on_progress(percent)

        def canceled() -> bool:
            return should_cancel is not None and should_cancel()

        progress(0)
        answer = self._call("POST", "run", json=payload)
        job_id = answer.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise TransientEngineError("runpod_bad_answer", f"RunPod's /run answer has no job id: {answer!r}")
        if on_submitted is not None:
            on_submitted(self.node, job_id)

        delays = poll_delays(self.poll_interval, self.poll_max_interval)
        failures = 0
        while True:
            self._wait(next(delays), deadline, canceled, job_id, request.timeout)
            try:
                status = self._call("GET", f"status/{job_id}")
            except TransientEngineError as exc:
                if exc.code == "runpod_job_lost":
                    raise
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                logger.warning("RunPod status poll for %s failed (%s); retrying", job_id, exc.message)
                continue
            failures = 0
            state = status.get("status")
            if state == "IN_QUEUE":
                progress(2)
            elif state == "IN_PROGRESS":
                progress(10)
            elif state == "COMPLETED":
                outputs = self._outputs(status.get("output"), workflow)
                progress(100)
                execution_ms = status.get("executionTime")
                seconds = execution_ms / 1000 if isinstance(execution_ms, int | float) else time.monotonic() - started
                hooks.used(self.node, seconds)
                return EngineResult(
                    outputs=outputs,
                    engine=self.name,
                    node=self.node,
                    prompt_id=job_id,
                    execution_seconds=seconds,
                )
            elif state == "FAILED":
                raise PermanentEngineError(
                    "runpod_failed", f"The RunPod worker failed: {_error_text(status)}", {"job_id": job_id}
                )
            elif state == "CANCELLED":
                raise EngineCanceled("canceled", "The RunPod job was cancelled.", {"job_id": job_id})
            elif state == "TIMED_OUT":
                raise TransientEngineError(
                    "runpod_timed_out", "The RunPod job hit the endpoint's execution timeout.", {"job_id": job_id}
                )
            else:
                logger.info("RunPod job %s has status %r; still waiting", job_id, state)

    def health(self) -> list[NodeHealth]:
        try:
            answer = self._call("GET", "health")
        except (TransientEngineError, PermanentEngineError) as exc:
            return [NodeHealth(node=self.node, healthy=False, detail=exc.message)]
        jobs: dict[str, Any] = answer["jobs"] if isinstance(answer.get("jobs"), dict) else {}
        workers: dict[str, Any] = answer["workers"] if isinstance(answer.get("workers"), dict) else {}
        queued = sum(int(jobs.get(key) or 0) for key in ("inQueue", "inProgress"))
        detail = ", ".join(f"{key} {value}" for key, value in sorted(workers.items())) or "no worker figures"
        return [NodeHealth(node=self.node, healthy=True, queue_length=queued, detail=f"workers: {detail}")]

    def cancel(self, node: str, prompt_id: str) -> None:
        try:
            self._call("POST", f"cancel/{prompt_id}")
        except (TransientEngineError, PermanentEngineError) as exc:
            logger.warning("Cancelling RunPod job %s failed: %s", prompt_id, exc.message)

    # --- Request and answer shapes --------------------------------------------------------

    def _payload(self, workflow: Workflow, request: RunRequest) -> dict[str, Any]:
        stem = _SAFE.sub("_", request.run_id)[:80] or "run"
        names: dict[str, str] = {}
        images: list[dict[str, str]] = []
        for image in request.images:
            suffix = PurePosixPath(image.filename).suffix.lower()
            suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".png"
            names[image.param] = f"{stem}_{image.param}{suffix}"
            images.append({"name": names[image.param], "image": base64.b64encode(image.data).decode("ascii")})
        try:
            graph = workflow.build(request.params, names, filename_prefix=f"rekindle/{stem}")
        except WorkflowParameterError as exc:
            raise PermanentEngineError("invalid_parameters", exc.message, {"fields": exc.fields}) from exc
        except ValueError as exc:
            raise PermanentEngineError("missing_input", str(exc)) from exc
        return {"input": {"workflow": graph, "images": images}}

    def _outputs(self, output: Any, workflow: Workflow) -> tuple[EngineOutput, ...]:
        if isinstance(output, list) and output and isinstance(output[0], dict):
            output = output[0]  # some handlers' results arrive wrapped in a list
        if not isinstance(output, dict):
            raise PermanentEngineError("no_output", f"The RunPod job completed without outputs: {output!r}")
        if "error" in output:
            raise PermanentEngineError("runpod_failed", f"The RunPod worker failed: {_error_text(output)}")
        results: list[EngineOutput] = []
        items = output.get("images")
        if isinstance(items, list):
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                filename = _SAFE.sub("_", str(item.get("filename") or f"output_{index}"))
                kind_of_data = item.get("type")
                data = item.get("data")
                if kind_of_data is None and isinstance(item.get("url"), str):
                    kind_of_data, data = "s3_url", item["url"]
                if not isinstance(data, str):
                    continue
                content = self._fetch(data) if kind_of_data == "s3_url" else _b64decode(data)
                results.append(_output(filename, content))
        elif isinstance(output.get("message"), str):
            message = output["message"]
            if message.startswith(("http://", "https://")):
                content = self._fetch(message)
                name = PurePosixPath(message.split("?", 1)[0]).name or "output"
            else:
                content = _b64decode(message)
                name = "output" + _sniff_suffix(content, workflow.output_kind)
            results.append(_output(_SAFE.sub("_", name), content))
        for warning in output.get("errors") or []:
            logger.warning("RunPod worker reported: %s", warning)
        if not results:
            raise PermanentEngineError("no_output", "The RunPod job completed but returned no files.")
        return tuple(results)

    def _fetch(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise PermanentEngineError("bad_output", f"Not a URL: {url[:100]!r}")
        try:
            # A plain GET: bucket URLs are presigned, and our API key must not go to another host.
            response = requests.get(url, timeout=self.request_timeout)
        except requests.RequestException as exc:
            raise TransientEngineError("output_unreachable", f"Could not download an output: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientEngineError("output_unreachable", f"Downloading an output gave {response.status_code}")
        if response.status_code != 200:
            raise PermanentEngineError("output_missing", f"Downloading an output gave {response.status_code}")
        return response.content

    # --- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}/v2/{self.endpoint_id}/{path}"
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.request_timeout,
            )
        except requests.RequestException as exc:
            raise TransientEngineError("runpod_unreachable", f"RunPod did not answer {method} /{path}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientEngineError(
                "runpod_unavailable", f"RunPod answered {response.status_code} to {method} /{path}"
            )
        if response.status_code in (401, 403):
            raise PermanentEngineError("runpod_auth", f"RunPod refused the API key ({response.status_code}).")
        if response.status_code == 404 and path.startswith("status/"):
            raise TransientEngineError("runpod_job_lost", f"RunPod no longer knows job {path.split('/', 1)[1]}.")
        if response.status_code >= 400:
            _reject(method, path, response)
        try:
            body = response.json()
        except ValueError:
            raise TransientEngineError(
                "runpod_bad_answer", f"RunPod's answer to {method} /{path} is not JSON: {response.text[:200]!r}"
            ) from None
        if not isinstance(body, dict):
            raise TransientEngineError("runpod_bad_answer", f"RunPod's answer to {method} /{path} is not an object")
        return body

    def _wait(self, seconds: float, deadline: float, canceled: CancelCheck, job_id: str, timeout: float) -> None:
        """Sleep ``seconds`` in short slices; cancel the job on RunPod if asked to stop or out of time."""
        until = time.monotonic() + seconds
        while True:
            if canceled():
                self.cancel(self.node, job_id)
                raise EngineCanceled("canceled", "The run was canceled.", {"job_id": job_id})
            now = time.monotonic()
            if now >= deadline:
                self.cancel(self.node, job_id)
                raise TransientEngineError(
                    "timeout", f"The RunPod job did not finish within {timeout:g} seconds.", {"job_id": job_id}
                )
            if now >= until:
                return
            time.sleep(min(CANCEL_CHECK_SECONDS, until - now, deadline - now))


def _workflow(name: str) -> Workflow:
    try:
        return get_workflow(name)
    except KeyError:
        raise PermanentEngineError("unknown_workflow", f"There is no workflow named {name!r}.") from None


def _reject(method: str, path: str, response: requests.Response) -> NoReturn:
    raise PermanentEngineError(
        "runpod_rejected",
        f"RunPod rejected {method} /{path} ({response.status_code}): {response.text[:500]}",
    )


def _error_text(body: Mapping[str, Any]) -> str:
    error = body.get("error")
    text = error if isinstance(error, str) else repr(error)
    details = body.get("details")
    if isinstance(details, list) and details:
        text += " (" + "; ".join(str(detail) for detail in details) + ")"
    return text[:2000]


def _b64decode(data: str) -> bytes:
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentEngineError("bad_output", f"An output is not valid base64: {exc}") from exc


def _sniff_suffix(content: bytes, fallback: OutputKind) -> str:
    if content.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if content.startswith(b"\x89PNG"):
        return ".png"
    if content[4:8] == b"ftyp":
        return ".mp4"
    if content.startswith(b"RIFF") and content[8:12] == b"WEBP":
        return ".webp"
    return ".mp4" if fallback == "video" else ".png"


def _output(filename: str, content: bytes) -> EngineOutput:
    suffix = PurePosixPath(filename).suffix.lower()
    if not suffix:
        suffix = _sniff_suffix(content, "image")
        filename += suffix
    # Animated WEBP is a video in our terms only when it is animated; a still WEBP is an image.
    is_video = suffix in VIDEO_SUFFIXES and not (suffix == ".webp" and b"ANIM" not in content[:64])
    kind: OutputKind = "video" if is_video else "image"
    content_type = mimetypes.guess_type(filename)[0] or ("video/mp4" if kind == "video" else "application/octet-stream")
    return EngineOutput(filename=filename, data=content, kind=kind, content_type=content_type)
