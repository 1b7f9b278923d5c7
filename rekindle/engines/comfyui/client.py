"""HTTP and websocket calls to one ComfyUI server, with connection failures turned into ``NodeUnavailable``."""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from websockets.sync.client import ClientConnection, connect

from rekindle.engines.comfyui.protocol import OutputFile


class NodeUnavailable(Exception):
    """The node did not answer (refused, reset, timed out) or answered with a server error."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"{node}: {reason}")
        self.node = node
        self.reason = reason


class PromptRejected(Exception):
    """``POST /prompt`` answered 400: the workflow does not validate on this node."""

    def __init__(self, body: Any) -> None:
        super().__init__("prompt rejected")
        self.body = body


@dataclass(frozen=True)
class QueueState:
    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


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
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                timeout=(self.connect_timeout, timeout or self.http_timeout),
                **kwargs,
            )
        except requests.RequestException as exc:
            raise NodeUnavailable(self.base_url, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise NodeUnavailable(self.base_url, f"{method} {path} answered {response.status_code}")
        return response

    def _json(self, response: requests.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise NodeUnavailable(self.base_url, f"{path} answered {response.status_code} without JSON") from exc

    # --- reads ---------------------------------------------------------------
    def system_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        response = self._request("GET", "/system_stats", timeout=timeout)
        body: dict[str, Any] = self._json(response, "/system_stats")
        return body

    def object_info(self) -> dict[str, Any]:
        response = self._request("GET", "/object_info")
        body: dict[str, Any] = self._json(response, "/object_info")
        return body

    def queue(self, *, timeout: float | None = None) -> QueueState:
        body = self._json(self._request("GET", "/queue", timeout=timeout), "/queue")

        def ids(items: Any) -> tuple[str, ...]:
            return tuple(str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1)

        return QueueState(ids(body.get("queue_running")), ids(body.get("queue_pending")))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a prompt, or None while it is not written (running, queued or unknown)."""
        body = self._json(self._request("GET", f"/history/{quote(prompt_id)}"), "/history")
        entry = body.get(prompt_id) if isinstance(body, Mapping) else None
        return entry if isinstance(entry, dict) else None

    def view(self, file: OutputFile) -> tuple[bytes, str]:
        """The bytes of an output file and its content type."""
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        response = self._request("GET", "/view", params=params)
        if response.status_code != 200:
            raise NodeUnavailable(self.base_url, f"/view {file.filename} answered {response.status_code}")
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
        if response.status_code != 200:
            raise NodeUnavailable(self.base_url, f"/upload/image answered {response.status_code}")
        body = self._json(response, "/upload/image")
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
        response = self._request("POST", "/prompt", json=payload)
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            raise PromptRejected(body)
        if response.status_code != 200:
            raise NodeUnavailable(self.base_url, f"/prompt answered {response.status_code}")
        body = self._json(response, "/prompt")
        return int(body.get("number", 0))

    def interrupt(self, prompt_id: str) -> None:
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=10)

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids}, timeout=10)

    def free(self) -> None:
        """Ask the node to unload its models and free memory (after an out-of-memory error)."""
        self._request("POST", "/free", json={"unload_models": True, "free_memory": True}, timeout=10)

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
        except (OSError, TimeoutError, Exception) as exc:
            raise NodeUnavailable(self.base_url, f"websocket: {type(exc).__name__}: {exc}") from exc


def decode_message(raw: str | bytes) -> dict[str, Any] | None:
    """A text frame as ``{"type", "data"}``; binary frames (previews) and junk give None."""
    if isinstance(raw, bytes):
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
