"""HTTP and websocket calls to one ComfyUI server, with every failed answer sorted into one ``NodeError`` kind.

How an answer is read (the pool decides what each kind means for the run):

- no answer (refused, reset, connect or read timeout): ``NodeDown`` with ``status`` None;
  the process is gone or cut off.
- 500, 502, 504 or another 5xx, a 503 without ``Retry-After``, a 200 that is not JSON:
  ``NodeDown`` with the status; the server (or the proxy's upstream) is failing.
- 429, or 503 with ``Retry-After``: ``NodeBusy`` with ``retry_after``; up, but refusing
  work for now.
- 400 from ``/prompt``: ``PromptRejected``; the workflow does not validate there.
- 404 from ``/view``: ``OutputMissing``; the file the history named is not there.
- any other 4xx (``/upload/image`` 400 or 413, ``/view`` 400 or 403, ...):
  ``RequestRejected``; our request is wrong, the node is fine.

ComfyUI itself answers 503 and 429 on no route; those come from a proxy in front of it (nginx,
a load balancer, a cloud GPU provider's gateway). A 503 that says when to come back
(``Retry-After``) is an overloaded or starting server; a bare 503 is what load balancers send
when they have no healthy backend (AWS ALB, HAProxy's "No server is available", Envoy's
"no healthy upstream"), so it counts as down. A 429 or 503 refuses the request rather than
processing it, so a ``/prompt`` that got one was not queued (the pool still sends one delete
and interrupt, in case a proxy got that wrong).
"""

from __future__ import annotations

import email.utils
import json
import logging
import mimetypes
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from websockets.sync.client import ClientConnection, connect

from rekindle.engines.comfyui.protocol import OutputFile

logger = logging.getLogger(__name__)

# How much of a node's answer is kept in an error (messages and details are shown to staff).
BODY_EXCERPT_CHARS = 500


class NodeError(Exception):
    """A call to a node that did not give the answer we need. ``status`` is None when there was no answer."""

    def __init__(self, node: str, route: str, reason: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.route = route
        self.reason = reason
        self.status = status
        self.body = body

    @property
    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"node": self.node, "route": self.route}
        if self.status is not None:
            details["status"] = self.status
        if self.body:
            details["body"] = self.body
        return details


class NodeDown(NodeError):
    """The node did not answer (``status`` None), or answered with a server error: it is not usable now."""

    # The call timed out rather than being refused or reset: the process is there but silent.
    timed_out: bool = False

    @property
    def answered(self) -> bool:
        """Whether an HTTP answer came at all (a failing server rather than an absent one)."""
        return self.status is not None


class NodeBusy(NodeError):
    """The node (or its proxy) is up but refuses work for now: 429, or 503 with ``Retry-After``."""

    def __init__(
        self, node: str, route: str, reason: str, *, status: int, body: str, retry_after: float | None
    ) -> None:
        super().__init__(node, route, reason, status=status, body=body)
        self.retry_after = retry_after


class RequestRejected(NodeError):
    """A 4xx: our request is wrong for this node. Retrying the same request cannot help; the node is fine."""


class PromptRejected(RequestRejected):
    """``POST /prompt`` answered 400: the workflow does not validate on this node. ``payload`` is the decoded body."""

    def __init__(self, node: str, payload: Any, body: str) -> None:
        super().__init__(node, "POST /prompt", "prompt rejected", status=400, body=body)
        self.payload = payload


class OutputMissing(NodeError):
    """``/view`` answered 404 for a file the prompt's history named."""


@dataclass(frozen=True)
class QueueState:
    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _excerpt(response: requests.Response) -> str:
    try:
        text = response.text
    except Exception:  # an undecodable body is no reason to lose the status
        return ""
    text = " ".join(text.split())
    return text[:BODY_EXCERPT_CHARS]


class ComfyNodeClient:
    """One ComfyUI server. Safe to share between threads (each thread gets its own HTTP session)."""

    def __init__(self, base_url: str, *, http_timeout: float = 30.0, connect_timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http_timeout = http_timeout
        self.connect_timeout = connect_timeout
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"ComfyNodeClient({self.base_url!r})"

    @property
    def _short_timeout(self) -> float:
        """For calls that only flip a flag on the node (interrupt, delete, free)."""
        return min(self.http_timeout, 10.0)

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _request(
        self, method: str, path: str, *, timeout: float | None = None, own: tuple[int, ...] = (), **kwargs: Any
    ) -> requests.Response:
        """The answer if it is a 2xx or a status in ``own`` (the caller reads those itself); otherwise the
        ``NodeError`` its status says."""
        route = f"{method} {path}"
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                timeout=(self.connect_timeout, timeout or self.http_timeout),
                **kwargs,
            )
        except requests.RequestException as exc:
            down = NodeDown(self.base_url, route, f"{route}: {type(exc).__name__}: {exc}")
            # No answer in time (the server took the connection and said nothing): hung, or only slow.
            down.timed_out = isinstance(exc, requests.Timeout)
            raise down from exc
        status = response.status_code
        if status < 400 or status in own:
            return response
        body = _excerpt(response)
        said = f"{route} answered {status}" + (f": {body}" if body else "")
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429 or (status == 503 and retry_after is not None):
            raise NodeBusy(self.base_url, route, said, status=status, body=body, retry_after=retry_after)
        if status >= 500:
            raise NodeDown(self.base_url, route, said, status=status, body=body)
        raise RequestRejected(self.base_url, route, said, status=status, body=body)

    def _json(self, response: requests.Response, route: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            body = _excerpt(response)
            raise NodeDown(
                self.base_url,
                route,
                f"{route} answered {response.status_code} without JSON: {body}",
                status=response.status_code,
                body=body,
            ) from exc

    # --- reads ---------------------------------------------------------------
    def system_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        response = self._request("GET", "/system_stats", timeout=timeout)
        body: dict[str, Any] = self._json(response, "GET /system_stats")
        return body

    def object_info(self) -> dict[str, Any]:
        response = self._request("GET", "/object_info")
        body: dict[str, Any] = self._json(response, "GET /object_info")
        return body

    def queue(self, *, timeout: float | None = None) -> QueueState:
        body = self._json(self._request("GET", "/queue", timeout=timeout), "GET /queue")

        def ids(items: Any) -> tuple[str, ...]:
            return tuple(str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1)

        if not isinstance(body, Mapping):
            raise NodeDown(
                self.base_url, "GET /queue", "GET /queue answered something other than an object", status=200
            )
        return QueueState(ids(body.get("queue_running")), ids(body.get("queue_pending")))

    def history(self, prompt_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The history entry of a prompt, or None while it is not written (running, queued or unknown)."""
        route = "GET /history/{prompt_id}"
        body = self._json(self._request("GET", f"/history/{quote(prompt_id)}", timeout=timeout), route)
        entry = body.get(prompt_id) if isinstance(body, Mapping) else None
        return entry if isinstance(entry, dict) else None

    def view(self, file: OutputFile) -> tuple[bytes, str]:
        """The bytes of an output file and its content type; ``OutputMissing`` if the node has no such file."""
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        response = self._request("GET", "/view", params=params, own=(404,))
        if response.status_code == 404:
            where = f"{file.subfolder}/{file.filename}" if file.subfolder else file.filename
            raise OutputMissing(
                self.base_url,
                "GET /view",
                f"GET /view answered 404 for {where} ({file.type}), which the prompt's history names",
                status=404,
                body=_excerpt(response),
            )
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
        return response.content, content_type

    # --- writes --------------------------------------------------------------
    def upload_image(self, name: str, data: bytes, content_type: str) -> str:
        """Upload an input; returns the name the node stored it under (what LoadImage must be given)."""
        response = self._request(
            "POST",
            "/upload/image",
            files={"image": (name, data, content_type)},
            data={"overwrite": "true", "type": "input"},
        )
        body = self._json(response, "POST /upload/image")
        if not isinstance(body, Mapping):
            body = {}
        subfolder = body.get("subfolder") or ""
        stored = str(body.get("name") or name)
        return f"{subfolder}/{stored}" if subfolder else stored

    def submit(
        self, graph: Mapping[str, Any], *, prompt_id: str, client_id: str, extra_data: Mapping[str, Any] | None = None
    ) -> int:
        """Queue a prompt under our own id; returns its queue number. Raises ``PromptRejected`` on a 400."""
        payload: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        response = self._request("POST", "/prompt", json=payload, own=(400,))
        if response.status_code == 400:
            try:
                decoded: Any = response.json()
            except ValueError:
                decoded = response.text
            raise PromptRejected(self.base_url, decoded, _excerpt(response))
        body = self._json(response, "POST /prompt")
        return int(body.get("number", 0)) if isinstance(body, Mapping) else 0

    def interrupt(self, prompt_id: str, *, timeout: float | None = None) -> None:
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=timeout or self._short_timeout)

    def delete_from_queue(self, prompt_ids: list[str], *, timeout: float | None = None) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids}, timeout=timeout or self._short_timeout)

    def stop_prompt(self, prompt_id: str, *, timeout: float | None = None) -> list[NodeError]:
        """Delete a prompt from the queue, then interrupt it; the errors of the calls that failed.

        In that order: a prompt that leaves the queue between the two calls is running by the
        time the interrupt arrives (ComfyUI ignores a delete for a running prompt and an
        interrupt for one that is not running).
        """
        errors: list[NodeError] = []
        try:
            self.delete_from_queue([prompt_id], timeout=timeout)
        except NodeError as exc:
            errors.append(exc)
        try:
            self.interrupt(prompt_id, timeout=timeout)
        except NodeError as exc:
            errors.append(exc)
        return errors

    # --- the node's files (the rekindle_files extension, comfyui_extension/) -----------
    # ComfyUI has no route that removes a file or reports its disk; the extension adds
    # ``POST /rekindle/files/delete`` and ``GET /rekindle/disk``. A node without it answers 404:
    # then nothing is removed there (logged once) and its disk shows as unknown.

    def delete_files(self, files: list[dict[str, str]], *, timeout: float | None = None) -> bool:
        """Remove inputs and outputs (``{"type", "subfolder", "filename"}``) from the node; False if it cannot."""
        if getattr(self, "_no_files_extension", False) or not files:
            return False
        try:
            response = self._request(
                "POST", "/rekindle/files/delete", json={"files": files}, timeout=timeout, own=(404,)
            )
        except NodeError as exc:
            logger.info("Could not remove %d file(s) from %s: %s", len(files), self.base_url, exc.reason)
            return False
        if response.status_code == 404:
            self._no_files_extension = True
            logger.warning(
                "ComfyUI node %s has no rekindle_files extension: our inputs and outputs stay on its disk",
                self.base_url,
            )
            return False
        return True

    def disk(self, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The node's disk (``total``, ``used``, ``free`` bytes, files of ours left), or None without the extension."""
        try:
            response = self._request("GET", "/rekindle/disk", timeout=timeout, own=(404,))
        except NodeError:
            return None
        if response.status_code == 404:
            return None
        body = self._json(response, "GET /rekindle/disk")
        return body if isinstance(body, dict) else None

    def free(self) -> None:
        """Ask the node to unload its models and free memory (after an out-of-memory error)."""
        self._request("POST", "/free", json={"unload_models": True, "free_memory": True}, timeout=self._short_timeout)

    # --- websocket -----------------------------------------------------------
    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={quote(client_id)}"

    def open_socket(self, client_id: str) -> ClientConnection:
        try:
            return connect(
                self.ws_url(client_id),
                open_timeout=self.connect_timeout + 2,
                close_timeout=1,
                max_size=None,
                # ComfyUI answers pings, but a long node may block its loop: our own quiet timeout decides.
                ping_interval=None,
            )
        except Exception as exc:  # refused, reset, a handshake a proxy answered with an error page
            raise NodeDown(self.base_url, "GET /ws", f"websocket: {type(exc).__name__}: {exc}") from exc


def decode_message(raw: str | bytes) -> dict[str, Any] | None:
    """A text frame as ``{"type", "data"}``; binary frames (previews) and junk give None."""
    if isinstance(raw, bytes):
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
