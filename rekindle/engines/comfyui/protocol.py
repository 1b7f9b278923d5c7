"""ComfyUI's websocket messages and history entries, read into progress, outcomes and output files.

Pure functions and one small state machine (``PromptTracker``), with no I/O, so the
recorded message sequences in the test fixtures can be replayed through exactly the
code a live run uses. The shapes are those of ComfyUI 0.3.64 as recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeStatus = Literal["success", "error", "interrupted"]

# Output lists a node can report files under: core nodes use "images" (with "animated": [true]
# for animations and videos); VideoHelperSuite's combine node uses "gifs".
_FILE_KEYS = ("images", "gifs", "videos")
_VIDEO_EXTENSIONS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}


@dataclass(frozen=True)
class OutputFile:
    """A file a node saved, as ``/view`` names it."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    animated: bool

    @property
    def is_video(self) -> bool:
        suffix = "." + self.filename.rsplit(".", 1)[-1].lower() if "." in self.filename else ""
        return self.animated or suffix in _VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Outcome:
    """How a prompt ended on the node."""

    status: OutcomeStatus
    outputs: tuple[OutputFile, ...] = ()
    # The execution_error / execution_interrupted payload when the prompt did not succeed.
    error: Mapping[str, Any] = field(default_factory=dict)
    execution_seconds: float | None = None


def output_files(outputs: Mapping[str, Any], *, include_temp: bool = False) -> list[OutputFile]:
    """The saved files in a history entry's ``outputs`` (or an ``executed`` message's ``output``), by node.

    ``temp`` files are previews (PreviewImage) that the node deletes on its own schedule:
    they are not results, so they are left out unless asked for.
    """
    files: list[OutputFile] = []
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, Mapping):
            continue
        animated_flags = node_output.get("animated") or []
        animated = any(bool(flag) for flag in animated_flags) if isinstance(animated_flags, list) else False
        for key in _FILE_KEYS:
            items = node_output.get(key)
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping) or not item.get("filename"):
                    continue
                file_type = str(item.get("type") or "output")
                if file_type == "temp" and not include_temp:
                    continue
                files.append(
                    OutputFile(
                        node_id=str(node_id),
                        filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder") or ""),
                        type=file_type,
                        animated=animated or key in ("gifs", "videos"),
                    )
                )
    return files


def _execution_seconds(messages: Iterable[Any]) -> float | None:
    started = ended = None
    for entry in messages:
        if not isinstance(entry, list | tuple) or len(entry) != 2 or not isinstance(entry[1], Mapping):
            continue
        kind, data = entry
        stamp = data.get("timestamp")
        if not isinstance(stamp, int | float):
            continue
        if kind == "execution_start":
            started = stamp
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            ended = stamp
    if started is None or ended is None:
        return None
    return max(0.0, (ended - started) / 1000.0)


def outcome_from_history(entry: Mapping[str, Any]) -> Outcome | None:
    """The outcome recorded in a ``/history/{id}`` entry, or None if it does not say yet."""
    status = entry.get("status")
    if not isinstance(status, Mapping):
        return None
    messages = status.get("messages") or []
    error: Mapping[str, Any] = {}
    interrupted = False
    for message in messages:
        if isinstance(message, list | tuple) and len(message) == 2 and isinstance(message[1], Mapping):
            if message[0] == "execution_error":
                error = message[1]
            elif message[0] == "execution_interrupted":
                error = message[1]
                interrupted = True
    files = tuple(output_files(entry.get("outputs") or {}))
    seconds = _execution_seconds(messages)
    if status.get("status_str") == "success" and status.get("completed"):
        return Outcome("success", files, execution_seconds=seconds)
    if interrupted:
        return Outcome("interrupted", files, error, seconds)
    if status.get("status_str") == "error" or error:
        return Outcome("error", files, error, seconds)
    return None


def is_out_of_memory(error: Mapping[str, Any]) -> bool:
    """Whether an execution_error is the GPU running out of memory (worth a retry after /free)."""
    exception_type = str(error.get("exception_type") or "")
    message = str(error.get("exception_message") or "").lower()
    return (
        exception_type.endswith("OutOfMemoryError")
        or "out of memory" in message
        or "ran out of memory" in message
        or "allocation on device" in message
    )


def describe_execution_error(error: Mapping[str, Any]) -> str:
    node = error.get("node_id", "?")
    node_type = error.get("node_type", "?")
    exception_type = error.get("exception_type") or "error"
    message = str(error.get("exception_message") or "").strip()
    # ComfyUI appends advice for people at a GPU console after a blank line; keep the first part.
    message = " ".join(message.split("\n\n", 1)[0].split())
    return f"Node {node} ({node_type}) failed: {exception_type}: {message}"


def describe_rejection(body: Any) -> tuple[str, dict[str, Any]]:
    """A readable message and structured details for a 400 from ``POST /prompt``."""
    if not isinstance(body, Mapping):
        return "The node rejected the workflow.", {"body": body}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    assert isinstance(error, Mapping)
    parts = [str(error.get("message") or "The node rejected the workflow.")]
    if error.get("details") and error.get("type") != "prompt_outputs_failed_validation":
        parts[0] += f": {error['details']}"
    node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), Mapping) else {}
    assert isinstance(node_errors, Mapping)
    for node_id, node_error in node_errors.items():
        if not isinstance(node_error, Mapping):
            continue
        class_type = node_error.get("class_type", "?")
        for item in node_error.get("errors") or []:
            if isinstance(item, Mapping):
                detail = f": {item['details']}" if item.get("details") else ""
                parts.append(f"node {node_id} ({class_type}): {item.get('message', 'error')}{detail}")
    details: dict[str, Any] = {
        "type": error.get("type", ""),
        "message": error.get("message", ""),
        "details": error.get("details", ""),
        "node_errors": dict(node_errors),
    }
    return "; ".join(parts), details


class PromptTracker:
    """Follows one prompt's websocket messages: progress over the whole graph and how it ended.

    Progress gives every node of the graph an equal share; cached nodes count as done at
    once, and ``progress{value, max}`` inside a running node (a sampler's steps) moves the
    bar within that node's share. ``success`` is set by ``execution_success``, which ComfyUI
    sends before it writes the history entry; ``ended`` by ``executing{node: null}``, sent
    after it, so outputs should be read from history only once ``ended`` is set (or by
    polling until the entry appears).
    """

    def __init__(self, graph: Mapping[str, Any], prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.node_ids = {str(node_id) for node_id in graph}
        self.done: set[str] = set()
        self.current: str | None = None
        self.current_fraction = 0.0
        self.started = False
        self.success = False
        self.ended = False
        self.error: Mapping[str, Any] | None = None
        self.interrupted: Mapping[str, Any] | None = None
        self.executed_outputs: dict[str, Any] = {}
        self.queue_remaining: int | None = None
        self.start_ms: float | None = None
        self.end_ms: float | None = None

    @property
    def terminal(self) -> bool:
        """The prompt is over on the node (successfully or not)."""
        return self.success or self.error is not None or self.interrupted is not None or self.ended

    @property
    def percent(self) -> int:
        if self.success:
            return 100
        total = len(self.node_ids) or 1
        done = len(self.done & self.node_ids)
        partial = self.current_fraction if self.current and self.current not in self.done else 0.0
        return min(99, int((done + partial) * 100 / total))

    @property
    def execution_seconds(self) -> float | None:
        if self.start_ms is None or self.end_ms is None:
            return None
        return max(0.0, (self.end_ms - self.start_ms) / 1000.0)

    def _finish_current(self) -> None:
        if self.current is not None:
            self.done.add(self.current)
        self.current = None
        self.current_fraction = 0.0

    def feed(self, message: Mapping[str, Any]) -> None:
        """Take one decoded text message (``{"type", "data"}``); messages of other prompts are ignored."""
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, Mapping):
            return
        if kind == "status":
            status = data.get("status")
            exec_info = status.get("exec_info") if isinstance(status, Mapping) else None
            if isinstance(exec_info, Mapping) and isinstance(exec_info.get("queue_remaining"), int):
                self.queue_remaining = exec_info["queue_remaining"]
            return
        if data.get("prompt_id") != self.prompt_id:
            return
        if kind == "execution_start":
            self.started = True
            stamp = data.get("timestamp")
            self.start_ms = float(stamp) if isinstance(stamp, int | float) else None
        elif kind == "execution_cached":
            self.started = True
            self.done.update(str(node) for node in data.get("nodes") or [])
        elif kind == "executing":
            node = data.get("node")
            self._finish_current()
            if node is None:
                self.ended = True
            else:
                self.current = str(node)
        elif kind == "progress":
            value, maximum = data.get("value"), data.get("max")
            node = data.get("node")
            if node is not None and str(node) != self.current:
                self._finish_current()
                self.current = str(node)
            if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                self.current_fraction = max(0.0, min(1.0, value / maximum))
        elif kind == "progress_state":
            nodes = data.get("nodes")
            if isinstance(nodes, Mapping):
                for node_id, state in nodes.items():
                    if isinstance(state, Mapping) and state.get("state") == "finished":
                        self.done.add(str(node_id))
        elif kind == "executed":
            node = data.get("node")
            if node is not None:
                self.done.add(str(node))
                output = data.get("output")
                if isinstance(output, Mapping):
                    self.executed_outputs[str(node)] = output
        elif kind == "execution_success":
            self._finish_current()
            self.success = True
            stamp = data.get("timestamp")
            self.end_ms = float(stamp) if isinstance(stamp, int | float) else None
        elif kind == "execution_error":
            self.error = data
            stamp = data.get("timestamp")
            self.end_ms = float(stamp) if isinstance(stamp, int | float) else None
        elif kind == "execution_interrupted":
            self.interrupted = data

    def outcome_from_messages(self) -> Outcome | None:
        """The outcome as the socket told it; outputs from ``executed`` messages (history may be richer)."""
        files = tuple(output_files(self.executed_outputs))
        if self.interrupted is not None:
            return Outcome("interrupted", files, self.interrupted, self.execution_seconds)
        if self.error is not None:
            return Outcome("error", files, self.error, self.execution_seconds)
        if self.success:
            return Outcome("success", files, execution_seconds=self.execution_seconds)
        return None
