"""A local stand-in of RunPod's serverless API with the ComfyUI worker behind it, for tests.

It serves ``/v2/{endpoint}/run``, ``/status/{id}``, ``/cancel/{id}`` and ``/health`` on
127.0.0.1 over real HTTP, checks the Bearer key, and records every request. A job goes
IN_QUEUE on its first status poll, IN_PROGRESS on the next, then ends as ``outcome`` says:

- ``"base64"``: COMPLETED, ``output.images`` with the files as base64 (worker-comfyui 5.x)
- ``"url"``: COMPLETED, ``output.images`` with ``type: "s3_url"`` pointing at files this server holds
- ``"legacy"``: COMPLETED, ``output.message`` with the first file as base64 (workers before 5.0)
- ``"fail"``: FAILED with an execution error text like the worker's
- ``"timed_out"``: TIMED_OUT
- ``"never"``: IN_PROGRESS until cancelled (then CANCELLED)
- ``"unavailable"``: every API call answers 503

The files a completed job returns are ``output_files`` if set, otherwise the job's first input
image echoed back under the name the workflow's save node would give it.

    with RunPodStandin() as standin:
        engine = RunPodEngine(base_url=standin.url, endpoint_id=standin.endpoint_id, api_key=standin.api_key)
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OUTCOMES = ("base64", "url", "legacy", "fail", "timed_out", "never", "unavailable")
FAILURE_TEXT = (
    "Workflow execution error: Node Type: KSampler, Node ID: 31, "
    "Message: Allocation on device 0 would exceed allowed memory. (out of memory)"
)


@dataclass
class StandinJob:
    id: str
    input: dict[str, Any]
    outcome: str
    polls: int = 0
    canceled: bool = False
    files: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


class RunPodStandin:
    def __init__(self, *, endpoint_id: str = "standin-endpoint", api_key: str = "standin-key") -> None:
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.outcome = "base64"
        self.output_files: list[tuple[str, bytes]] | None = None
        self.execution_ms = 1234
        self.jobs: dict[str, StandinJob] = {}
        self.canceled: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.bucket: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="runpod-standin", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RunPodStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RunPodStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    # --- Behaviour ---------------------------------------------------------------------

    def _files_for(self, job_input: dict[str, Any]) -> list[tuple[str, bytes]]:
        if self.output_files is not None:
            return list(self.output_files)
        images = job_input.get("images") or []
        data = base64.b64decode(images[0]["image"]) if images else b""
        prefix, suffix = "ComfyUI", ".png"
        for node in (job_input.get("workflow") or {}).values():
            if node.get("class_type") in ("SaveImage", "SaveVideo"):
                prefix = str(node["inputs"].get("filename_prefix", prefix))
                suffix = ".mp4" if node["class_type"] == "SaveVideo" else ".png"
        return [(f"{prefix.rsplit('/', 1)[-1]}_00001_{suffix}", data)]

    def _status(self, job: StandinJob) -> dict[str, Any]:
        job.polls += 1
        body: dict[str, Any] = {"id": job.id, "delayTime": 15}
        if job.canceled:
            return body | {"status": "CANCELLED"}
        if job.polls == 1:
            return body | {"status": "IN_QUEUE"}
        if job.polls == 2 or job.outcome == "never":
            return body | {"status": "IN_PROGRESS"}
        if job.outcome == "fail":
            return body | {"status": "FAILED", "error": FAILURE_TEXT, "executionTime": self.execution_ms}
        if job.outcome == "timed_out":
            return body | {"status": "TIMED_OUT"}
        body |= {"status": "COMPLETED", "executionTime": self.execution_ms}
        if job.outcome == "legacy":
            return body | {"output": {"status": "success", "message": base64.b64encode(job.files[0][1]).decode()}}
        images = []
        for filename, data in job.files:
            if job.outcome == "url":
                key = f"{job.id}/{filename}"
                self.bucket[key] = data
                images.append({"filename": filename, "type": "s3_url", "data": f"{self.url}/bucket/{key}"})
            else:
                images.append({"filename": filename, "type": "base64", "data": base64.b64encode(data).decode()})
        return body | {"output": {"images": images}}

    def _health(self) -> dict[str, Any]:
        running = sum(1 for job in self.jobs.values() if not job.canceled and job.polls >= 2)
        queued = sum(1 for job in self.jobs.values() if not job.canceled and job.polls < 2)
        return {
            "jobs": {"completed": 0, "failed": 0, "inProgress": running, "inQueue": queued, "retried": 0},
            "workers": {"idle": 1, "initializing": 0, "ready": 1, "running": running, "throttled": 0, "unhealthy": 0},
        }

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers))
            if method == "GET" and path.startswith("/bucket/"):
                key = path.removeprefix("/bucket/")
                return (200, self.bucket[key]) if key in self.bucket else (404, {"error": "NoSuchKey"})
            prefix = f"/v2/{self.endpoint_id}/"
            if not path.startswith(prefix):
                return 404, {"error": "endpoint not found"}
            if headers.get("authorization") != f"Bearer {self.api_key}":
                return 401, {"error": "Unauthorized"}
            if self.outcome == "unavailable":
                return 503, {"error": "Service Unavailable"}
            route = path.removeprefix(prefix)
            if method == "POST" and route in ("run", "runsync"):
                try:
                    job_input = json.loads(body)["input"]
                    if not isinstance(job_input.get("workflow"), dict):
                        raise ValueError("workflow")
                except (ValueError, KeyError, TypeError):
                    return 400, {"error": "Invalid input: 'input.workflow' must be a JSON object"}
                job = StandinJob(id=f"{uuid.uuid4()}-e1", input=job_input, outcome=self.outcome)
                job.files = self._files_for(job_input)
                self.jobs[job.id] = job
                return 200, {"id": job.id, "status": "IN_QUEUE"}
            if method == "GET" and route.startswith("status/"):
                job_or_none = self.jobs.get(route.removeprefix("status/"))
                return (200, self._status(job_or_none)) if job_or_none else (404, {"error": "job not found"})
            if method == "POST" and route.startswith("cancel/"):
                job_or_none = self.jobs.get(route.removeprefix("cancel/"))
                if job_or_none is None:
                    return 404, {"error": "job not found"}
                job_or_none.canceled = True
                self.canceled.append(job_or_none.id)
                return 200, {"id": job_or_none.id, "status": "CANCELLED"}
            if method == "GET" and route == "health":
                return 200, self._health()
            return 404, {"error": "not found"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, answer = standin._handle(method, self.path.split("?", 1)[0], headers, body)
                payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                content_type = "application/octet-stream" if isinstance(answer, bytes) else "application/json"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; requests are in standin.requests

        return Handler
