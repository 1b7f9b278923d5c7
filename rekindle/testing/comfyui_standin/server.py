"""The stand-in's HTTP and websocket server: ComfyUI 0.3.64's routes, queue, history and messages.

Answers the way the recordings in ``rekindle/testing/fixtures/comfyui/`` show, runs one
prompt at a time, and takes faults a test switches on through routes outside ComfyUI's
namespace (``/_standin/...``).

Two kinds of fault: counted ones inside the execution (``COUNTED_FAULTS``: crash, restart,
a dropped or silent socket, an execution error, out of memory, a rejected prompt), and
answers of a route replaced by an error status, as ComfyUI or a proxy in front of it gives
them (``http`` faults, see ``HttpFault``). Every prompt's life on the server (queued,
started, ended and how) is recorded in ``Standin.record`` and, with ``--record PATH``,
appended to a file as JSON lines, so a test can tell when a prompt was on which server
even after a crash.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import mimetypes
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from rekindle.testing.comfyui_standin.nodes import (
    FIXTURES,
    MODEL_INPUTS,
    NODES,
    ExecContext,
    Interrupted,
    build_object_info,
    list_input_files,
    recorded_object_info,
)

logger = logging.getLogger("comfyui_standin")

# The message ComfyUI sends for a CUDA out-of-memory error: torch's text, then ComfyUI's tips.
OOM_EXCEPTION_TYPE = "torch.OutOfMemoryError"
OOM_MESSAGE = (
    "Allocation on device \n"
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)
# Faults that apply to a number of prompts, counted down as they fire.
COUNTED_FAULTS = ("crash", "restart", "drop_socket", "silent_socket", "execution_error", "oom", "reject")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


@dataclass
class QueuedPrompt:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return str(value) if value else None

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class StandinConfig:
    sampler_seconds: float = 0.2
    switch_seconds: float = 0.0
    models: list[str] = field(default_factory=list)
    base_dir: Path = field(default_factory=lambda: Path("."))
    # Where the prompt record is appended as JSON lines (None: kept in memory only).
    record_path: Path | None = None
    # Serve the routes of our node extension (file removal, disk), as a node with it installed.
    files_extension: bool = True


@dataclass
class HttpFault:
    """A route answering an error instead of its own answer: ``set_faults(http={"POST /prompt": {...}})``.

    The key is ``METHOD /path``, with a trailing ``*`` matching any rest of the path
    (``GET /history/*``); ``/api/...`` aliases match too. ``times`` counts answers (-1: all).
    ``after``: the route does its work first (a prompt is queued, a file stored) and only its
    answer is replaced, as when a proxy loses the answer. ``delay`` seconds pass before the
    answer. ``retry_after`` is sent as the ``Retry-After`` header. ``status`` 0 slows the route
    without changing it: its own answer, after ``delay`` (a slow disk or link).
    """

    status: int
    times: int = 1
    body: str = ""
    retry_after: str | None = None
    after: bool = False
    delay: float = 0.0

    @classmethod
    def parse(cls, raw: Any) -> HttpFault:
        if not isinstance(raw, dict) or not isinstance(raw.get("status"), int):
            raise ValueError(f"an http fault needs an integer status: {raw!r}")
        retry_after = raw.get("retry_after")
        return cls(
            status=raw["status"],
            times=int(raw.get("times", 1)),
            body=str(raw.get("body", "")),
            retry_after=None if retry_after is None else str(retry_after),
            after=bool(raw.get("after", False)),
            delay=float(raw.get("delay", 0.0)),
        )

    def response(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        return web.Response(status=self.status, text=self.body, headers=headers)


class Standin:
    """The state of one stand-in ComfyUI server."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.input_dir = config.base_dir / "input"
        self.output_dir = config.base_dir / "output"
        self.temp_dir = config.base_dir / "temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.base_info = recorded_object_info()
        basics = json.loads((FIXTURES / "01_server_basics.json").read_text())
        self.recorded = {exchange["request"]["path"]: exchange["response_body"] for exchange in basics["exchanges"]}
        self.pending: list[QueuedPrompt] = []
        self.running: QueuedPrompt | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.muted: set[str] = set()
        self.number = 0
        self.counters: Counter[str] = Counter()
        self.faults: dict[str, Any] = {}
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.loaded_models: tuple[str, ...] | None = None
        self.interrupt_requested = False
        self.wakeup = asyncio.Event()
        self.generation = 0
        self.background: set[asyncio.Future[Any]] = set()
        self.current_task: asyncio.Future[str] | None = None
        self.record: list[dict[str, Any]] = []

    # --- the prompt record -------------------------------------------------------------
    def note(self, event: str, item: QueuedPrompt, how: str = "") -> None:
        """One step of a prompt's life here: ``queued``, ``started`` or ``ended`` (``how`` it ended)."""
        entry = {
            "t": time.time(),
            "event": event,
            "prompt_id": item.prompt_id,
            "run": str(item.extra_data.get("rekindle_run") or ""),
            "client_id": item.client_id or "",
            "how": how,
            "pid": os.getpid(),
        }
        self.record.append(entry)
        if self.config.record_path is not None:
            with self.config.record_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    def end_all(self, how: str) -> None:
        """Every prompt queued or running here ends at once (a restart, a crash)."""
        for item in ([self.running] if self.running else []) + list(self.pending):
            self.note("ended", item, how)

    def http_fault(self, method: str, path: str) -> HttpFault | None:
        """The http fault that answers this request now, if one is switched on (and count it down)."""
        faults = self.faults.get("http")
        if not isinstance(faults, dict) or not faults:
            return None
        path = path.removeprefix("/api") if path.startswith("/api/") else path
        for key, raw in faults.items():
            wanted_method, _, pattern = str(key).partition(" ")
            matches = path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern
            if wanted_method.upper() != method or not matches:
                continue
            fault = HttpFault.parse(raw)
            if fault.times == 0:
                continue
            if fault.times > 0:
                raw["times"] = fault.times - 1
            self.counters[f"http_fault {key}"] += 1
            return fault
        return None

    # --- object_info and validation -------------------------------------------------
    def object_info(self) -> dict[str, Any]:
        models = [name for name in self.config.models if name not in set(self.faults.get("missing_models") or [])]
        return build_object_info(
            self.base_info,
            models=models,
            input_files=list_input_files(self.input_dir),
            missing_classes=set(self.faults.get("missing_classes") or []),
        )

    def validate(self, prompt: dict[str, Any]) -> tuple[int, dict[str, Any], list[str]]:
        """(status, error body, outputs to run) for a prompt, with ComfyUI's error types and wording."""
        info = self.object_info()
        for node_id, node in prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type is None:
                return (
                    400,
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                )
            if class_type not in info:
                return (
                    400,
                    _error(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                )
        outputs = [node_id for node_id, node in prompt.items() if info[node["class_type"]].get("output_node")]
        if not outputs:
            return 400, _error("prompt_no_outputs", "Prompt has no outputs", ""), []
        results: dict[str, list[dict[str, Any]]] = {}
        valid: dict[str, bool] = {}

        def check(node_id: str) -> bool:
            if node_id in valid:
                return valid[node_id]
            valid[node_id] = True  # cycles are not ours to diagnose
            node = prompt[node_id]
            spec = info[node["class_type"]]["input"]
            declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}
            errors: list[dict[str, Any]] = []
            ancestors_ok = True
            for name in sorted(spec.get("required") or {}):
                if name not in node.get("inputs", {}):
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": name,
                            "extra_info": {"input_name": name},
                        }
                    )
            for name, value in (node.get("inputs") or {}).items():
                input_spec = declared.get(name)
                if input_spec is None:
                    continue
                kind = input_spec[0]
                options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
                if _is_link(value):
                    source_id = value[0]
                    if source_id not in prompt:
                        errors.append(
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": repr(source_id),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_spec,
                                    "exception_message": repr(source_id),
                                    "exception_type": "KeyError",
                                    "traceback": [],
                                    "linked_node": value,
                                },
                            }
                        )
                        continue
                    if not check(source_id):
                        ancestors_ok = False
                    produced = info[prompt[source_id]["class_type"]].get("output") or []
                    received = produced[value[1]] if value[1] < len(produced) else None
                    if (
                        isinstance(kind, str)
                        and kind not in ("*", "COMBO")
                        and received not in (None, "*")
                        and received != kind
                        and received not in kind.split(",")
                    ):
                        errors.append(
                            {
                                "type": "return_type_mismatch",
                                "message": "Return type mismatch between linked nodes",
                                "details": f"{name}, received_type({received}) mismatch input_type({kind})",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_spec,
                                    "received_type": received,
                                    "linked_node": value,
                                },
                            }
                        )
                    continue
                if options.get("image_upload"):
                    if not (self.input_dir / str(value)).is_file():
                        errors.append(
                            {
                                "type": "custom_validation_failed",
                                "message": "Custom validation failed for node",
                                "details": f"{name} - Invalid image file: {value}",
                                "extra_info": {"input_name": name},
                            }
                        )
                    continue
                if isinstance(kind, list):
                    if value not in kind:
                        errors.append(
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"{name}: {value!r} not in {kind!r}",
                                "extra_info": {"input_name": name, "input_config": input_spec, "received_value": value},
                            }
                        )
                    continue
                if kind in ("INT", "FLOAT"):
                    try:
                        number = int(value) if kind == "INT" else float(value)
                    except (TypeError, ValueError) as exc:
                        errors.append(
                            {
                                "type": "invalid_input_type",
                                "message": f"Failed to convert an input value to a {kind} value",
                                "details": f"{name}, {value}, {exc}",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_spec,
                                    "received_value": value,
                                    "exception_message": str(exc),
                                },
                            }
                        )
                        continue
                    if "min" in options and number < options["min"]:
                        errors.append(
                            {
                                "type": "value_smaller_than_min",
                                "message": f"Value {number} smaller than min of {options['min']}",
                                "details": name,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_spec,
                                    "received_value": number,
                                },
                            }
                        )
                    if "max" in options and number > options["max"]:
                        errors.append(
                            {
                                "type": "value_bigger_than_max",
                                "message": f"Value {number} bigger than max of {options['max']}",
                                "details": name,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": input_spec,
                                    "received_value": number,
                                },
                            }
                        )
            if errors:
                results[node_id] = errors
            valid[node_id] = not errors and ancestors_ok
            return valid[node_id]

        good = [node_id for node_id in outputs if check(node_id)]
        node_errors: dict[str, Any] = {}
        for node_id, errors in results.items():
            dependents = [output for output in outputs if node_id in _ancestors(prompt, output)]
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": dependents,
                "class_type": prompt[node_id]["class_type"],
            }
        if not good:
            details = "\n".join(
                f"{error['message']}: {error['details']}" for output in outputs for error in results.get(output, [])
            )
            body = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
            body["node_errors"] = node_errors
            return 400, body, []
        return 200, {"node_errors": node_errors}, good

    # --- messages ------------------------------------------------------------------
    async def send(self, kind: str, data: dict[str, Any], client_id: str | None) -> None:
        """To the prompt's client only; without one ComfyUI broadcasts status and progress_state, nothing else."""
        if client_id is None:
            if kind not in ("status", "progress_state"):
                return
            targets = list(self.sockets.items())
        else:
            targets = [(client_id, self.sockets[client_id])] if client_id in self.sockets else []
        text = json.dumps({"type": kind, "data": data})
        for sid, ws in targets:
            if sid in self.muted or ws.closed:
                continue
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                continue

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    async def send_status(self) -> None:
        await self.send("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}, None)

    def take_fault(self, name: str) -> bool:
        """Whether a counted fault fires now (and count it down)."""
        remaining = int(self.faults.get(name) or 0)
        if remaining == 0:
            return False
        if remaining > 0:
            self.faults[name] = remaining - 1
        self.counters[f"fault_{name}"] += 1
        return True

    def forget(self) -> None:
        """What a restarted ComfyUI has: no queue, no history, no loaded models, no sockets."""
        self.generation += 1
        self.end_all("forgotten")
        # A restarted server is not still running the old prompt.
        if self.current_task is not None:
            self.current_task.cancel()
        self.pending.clear()
        self.running = None
        self.history.clear()
        self.cache.clear()
        self.loaded_models = None
        for ws in list(self.sockets.values()):
            task = asyncio.ensure_future(ws.close())
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        self.sockets.clear()
        self.counters["restarts"] += 1

    # --- execution -------------------------------------------------------------------
    async def worker(self) -> None:
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            self.pending.sort(key=lambda item: item.number)
            item = self.pending.pop(0)
            self.running = item
            self.note("started", item)
            self.interrupt_requested = False
            generation = self.generation
            self.current_task = asyncio.ensure_future(self.execute(item, generation))
            how = "failed"
            try:
                how = await self.current_task
            except asyncio.CancelledError:
                if not self.current_task.cancelled():
                    raise
            except Exception:
                logger.exception("stand-in failed while running %s", item.prompt_id)
            self.current_task = None
            if self.generation == generation:
                self.note("ended", item, how)
                self.running = None
                self.muted.discard(item.client_id or "")
                await self.send_status()
                await self.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)

    def _signature(self, prompt: dict[str, Any], node_id: str, memo: dict[str, str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        parts = []
        for name, value in sorted((node.get("inputs") or {}).items()):
            if _is_link(value) and value[0] in prompt:
                parts.append((name, self._signature(prompt, value[0], memo), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True), None))
        if node["class_type"] == "LoadImage":
            path = self.input_dir / str(node["inputs"].get("image"))
            stat = path.stat() if path.exists() else None
            parts.append(("file", f"{stat.st_mtime_ns}:{stat.st_size}" if stat else "", None))
        memo[node_id] = json.dumps([node["class_type"], parts])
        return memo[node_id]

    async def execute(self, item: QueuedPrompt, generation: int) -> str:
        """Run one prompt; how it ended: ``success``, ``error``, ``interrupted`` (or ``forgotten``)."""
        prompt, prompt_id, client_id = item.prompt, item.prompt_id, item.client_id
        messages: list[list[Any]] = []
        await self.send_status()
        if client_id and self.take_fault("silent_socket"):
            self.muted.add(client_id)
        start = {"prompt_id": prompt_id, "timestamp": _now_ms()}
        messages.append(["execution_start", start])
        await self.send("execution_start", start, client_id)
        if client_id and client_id in self.sockets and self.take_fault("drop_socket"):
            await self.sockets.pop(client_id).close()

        order: list[str] = []
        for output in item.outputs:
            for node_id in _post_order(prompt, output):
                if node_id not in order:
                    order.append(node_id)
        memo: dict[str, str] = {}
        signatures = {node_id: self._signature(prompt, node_id, memo) for node_id in order}
        cached = [node_id for node_id in order if signatures[node_id] in self.cache]
        cached_msg = {"nodes": cached, "prompt_id": prompt_id, "timestamp": _now_ms()}
        messages.append(["execution_cached", cached_msg])
        await self.send("execution_cached", cached_msg, client_id)

        values: dict[str, tuple[Any, ...]] = {}
        outputs: dict[str, Any] = {}
        states: dict[str, dict[str, Any]] = {}
        new_cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        for node_id in cached:
            values[node_id], ui = self.cache[signatures[node_id]]
            new_cache[signatures[node_id]] = (values[node_id], ui)
            if ui is not None:
                outputs[node_id] = ui
                await self.send(
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                    client_id,
                )

        models = tuple(sorted(str(v) for node in prompt.values() for (ct, name), v in _model_inputs(node)))
        executed: list[str] = []
        current = ""

        def state(node_id: str, value: float, kind: str) -> dict[str, Any]:
            return {
                "value": value,
                "max": 1.0,
                "state": kind,
                "node_id": node_id,
                "prompt_id": prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }

        async def report(value: int, maximum: int) -> None:
            await self.send(
                "progress", {"value": value, "max": maximum, "prompt_id": prompt_id, "node": current}, client_id
            )

        ctx = ExecContext(
            input_dir=self.input_dir,
            output_dir=self.output_dir,
            temp_dir=self.temp_dir,
            sampler_seconds=float(self.faults.get("sampler_seconds", self.config.sampler_seconds)),
            report_progress=report,
            interrupted=lambda: self.interrupt_requested,
        )
        try:
            for node_id in order:
                if node_id in cached:
                    continue
                if self.interrupt_requested:
                    raise Interrupted()
                current = node_id
                class_type = prompt[node_id]["class_type"]
                states[node_id] = state(node_id, 0.0, "running")
                await self.send("progress_state", {"prompt_id": prompt_id, "nodes": copy.deepcopy(states)}, client_id)
                await self.send(
                    "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, client_id
                )
                if self.take_fault("crash"):
                    logger.warning("stand-in crashing on purpose")
                    self.end_all("crashed")
                    os._exit(3)
                if self.take_fault("restart"):
                    self.forget()
                    return "forgotten"
                if models and self.loaded_models != models:
                    switch = float(self.faults.get("switch_seconds", self.config.switch_seconds))
                    if self.loaded_models is not None:
                        self.counters["model_switches"] += 1
                        self.counters["model_switch_ms"] += int(switch * 1000)
                        await asyncio.sleep(switch)
                    self.loaded_models = models
                if self.take_fault("oom"):
                    raise MemoryError(OOM_MESSAGE)
                if self.take_fault("execution_error"):
                    raise RuntimeError(f"Injected failure in {class_type}")
                delay = float(self.faults.get("node_delay") or 0)
                if delay:
                    await asyncio.sleep(delay)
                inputs = {
                    name: values[value[0]][value[1]] if _is_link(value) else value
                    for name, value in (prompt[node_id].get("inputs") or {}).items()
                }
                function = NODES.get(class_type)
                if function is None:
                    raise NotImplementedError(f"The stand-in does not run {class_type}")
                result, ui = await function(ctx, inputs)
                if self.generation != generation:
                    return "forgotten"
                values[node_id] = result
                new_cache[signatures[node_id]] = (result, ui)
                executed.append(node_id)
                if ui is not None:
                    outputs[node_id] = ui
                    await self.send(
                        "executed",
                        {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
                        client_id,
                    )
                states[node_id] = state(node_id, 1.0, "finished")
                await self.send("progress_state", {"prompt_id": prompt_id, "nodes": copy.deepcopy(states)}, client_id)
        except Interrupted:
            data = {
                "prompt_id": prompt_id,
                "node_id": current,
                "node_type": prompt.get(current, {}).get("class_type", ""),
                "executed": executed,
                "timestamp": _now_ms(),
            }
            messages.append(["execution_interrupted", data])
            await self.send("execution_interrupted", data, client_id)
            self._write_history(item, outputs, "error", False, messages)
            self.counters["interrupted"] += 1
            return "interrupted"
        except Exception as exc:
            oom = isinstance(exc, MemoryError)
            data = {
                "prompt_id": prompt_id,
                "node_id": current,
                "node_type": prompt[current]["class_type"],
                "executed": executed,
                "exception_message": OOM_MESSAGE if oom else f"{exc}\n",
                "exception_type": OOM_EXCEPTION_TYPE
                if oom
                else f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
                "traceback": ['  File "<comfyui>/execution.py", line 496, in execute\n'],
                "current_inputs": {},
                "current_outputs": list(order),
                "timestamp": _now_ms(),
            }
            if oom:
                # ComfyUI unloads every model after an OOM.
                self.loaded_models = None
                self.cache.clear()
            messages.append(["execution_error", data])
            await self.send("execution_error", data, client_id)
            self._write_history(item, outputs, "error", False, messages)
            self.counters["errors"] += 1
            return "error"
        if not executed:
            states = {node_id: state(node_id, 1.0, "finished") for node_id in order}
            await self.send("progress_state", {"prompt_id": prompt_id, "nodes": states}, client_id)
        success = {"prompt_id": prompt_id, "timestamp": _now_ms()}
        messages.append(["execution_success", success])
        await self.send("execution_success", success, client_id)
        self.cache = new_cache
        # ComfyUI writes history after execution_success has gone out.
        await asyncio.sleep(0.005)
        self._write_history(item, outputs, "success", True, messages)
        self.counters["executed"] += 1
        return "success"

    def _write_history(
        self, item: QueuedPrompt, outputs: dict[str, Any], status: str, completed: bool, messages: list[list[Any]]
    ) -> None:
        self.history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages},
            "meta": {
                node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
                for node_id in outputs
            },
        }


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


def _model_inputs(node: dict[str, Any]) -> list[tuple[tuple[str, str], Any]]:
    class_type = node.get("class_type", "")
    return [
        ((class_type, name), value)
        for name, value in (node.get("inputs") or {}).items()
        if (class_type, name) in MODEL_INPUTS
    ]


def _post_order(prompt: dict[str, Any], node_id: str) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(current: str) -> None:
        if current in seen or current not in prompt:
            return
        seen.add(current)
        for value in (prompt[current].get("inputs") or {}).values():
            if _is_link(value):
                visit(value[0])
        order.append(current)

    visit(node_id)
    return order


def _ancestors(prompt: dict[str, Any], node_id: str) -> set[str]:
    return set(_post_order(prompt, node_id))


# --- routes ---------------------------------------------------------------------------
def make_app(standin: Standin) -> web.Application:
    routes = web.RouteTableDef()

    def json_response(body: Any, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(body), status=status, content_type="application/json", charset="utf-8")

    @routes.get("/system_stats")
    async def system_stats(request: web.Request) -> web.Response:
        return json_response(standin.recorded["/system_stats"])

    @routes.get("/object_info")
    async def object_info(request: web.Request) -> web.Response:
        return json_response(standin.object_info())

    @routes.get("/object_info/{node_class}")
    async def object_info_one(request: web.Request) -> web.Response:
        info = standin.object_info()
        name = request.match_info["node_class"]
        return json_response({name: info[name]} if name in info else {})

    @routes.get("/features")
    async def features(request: web.Request) -> web.Response:
        return json_response(standin.recorded["/features"])

    @routes.get("/embeddings")
    async def embeddings(request: web.Request) -> web.Response:
        return json_response([])

    @routes.get("/models")
    async def models(request: web.Request) -> web.Response:
        return json_response(standin.recorded["/models"])

    @routes.get("/prompt")
    async def get_prompt(request: web.Request) -> web.Response:
        return json_response({"exec_info": {"queue_remaining": standin.queue_remaining()}})

    @routes.post("/prompt")
    async def post_prompt(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if not isinstance(body, dict) or "prompt" not in body:
            return json_response(_error("no_prompt", "No prompt provided", "No prompt provided"), 400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return json_response(_error("invalid_prompt", "Invalid prompt", "The prompt must be an object"), 400)
        if standin.take_fault("reject"):
            first = next(iter(prompt))
            body_400 = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
            body_400["node_errors"] = {
                first: {
                    "errors": [
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": "injected by the stand-in",
                            "extra_info": {},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": prompt[first].get("class_type", ""),
                }
            }
            standin.counters["rejected"] += 1
            return json_response(body_400, 400)
        status, result, outputs = standin.validate(prompt)
        if status != 200:
            standin.counters["rejected"] += 1
            return json_response(result, status)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra_data = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra_data["client_id"] = body["client_id"]
        standin.number += 1
        number = -standin.number if body.get("front") else standin.number
        queued = QueuedPrompt(number, prompt_id, prompt, extra_data, outputs)
        standin.pending.append(queued)
        standin.note("queued", queued)
        standin.counters["prompts"] += 1
        standin.counters["max_queue"] = max(standin.counters["max_queue"], standin.queue_remaining())
        standin.wakeup.set()
        await standin.send_status()
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": result["node_errors"]})

    @routes.get("/queue")
    async def get_queue(request: web.Request) -> web.Response:
        running = [standin.running.as_list()] if standin.running else []
        pending = [item.as_list() for item in sorted(standin.pending, key=lambda item: item.number)]
        return json_response({"queue_running": running, "queue_pending": pending})

    @routes.post("/queue")
    async def post_queue(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            for item in standin.pending:
                standin.note("ended", item, "cleared")
            standin.pending.clear()
        for prompt_id in body.get("delete") or []:
            for item in standin.pending:
                if item.prompt_id == prompt_id:
                    standin.note("ended", item, "deleted")
            standin.pending = [item for item in standin.pending if item.prompt_id != prompt_id]
            standin.counters["queue_deletes"] += 1
        await standin.send_status()
        return web.Response(status=200)

    @routes.post("/interrupt")
    async def interrupt(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        standin.counters["interrupts"] += 1
        target = body.get("prompt_id")
        if standin.running and (target is None or target == standin.running.prompt_id):
            standin.interrupt_requested = True
        return web.Response(status=200)

    @routes.post("/free")
    async def free(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        standin.counters["frees"] += 1
        if body.get("unload_models"):
            standin.loaded_models = None
            standin.cache.clear()
        return web.Response(status=200)

    @routes.get("/history")
    async def get_history(request: web.Request) -> web.Response:
        items = list(standin.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :]
        return json_response(dict(items))

    @routes.get("/history/{prompt_id}")
    async def get_history_one(request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = standin.history.get(prompt_id)
        return json_response({prompt_id: entry} if entry else {})

    @routes.post("/history")
    async def post_history(request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            standin.history.clear()
        for prompt_id in body.get("delete") or []:
            standin.history.pop(prompt_id, None)
        return web.Response(status=200)

    @routes.post("/upload/image")
    async def upload_image(request: web.Request) -> web.Response:
        form = await request.post()
        image = form.get("image")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        folder_type = str(form.get("type") or "input")
        base = {"input": standin.input_dir, "temp": standin.temp_dir, "output": standin.output_dir}.get(folder_type)
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        filename = os.path.basename(image.filename or "")
        if base is None or not filename:
            return web.Response(status=400)
        folder = (base / subfolder).resolve()
        if not str(folder).startswith(str(base.resolve())):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        target = folder / filename
        if target.exists() and not overwrite and target.read_bytes() != data:
            stem, suffix = os.path.splitext(filename)
            index = 1
            while (folder / f"{stem} ({index}){suffix}").exists():
                index += 1
            filename = f"{stem} ({index}){suffix}"
            target = folder / filename
        target.write_bytes(data)
        standin.counters["uploads"] += 1
        return json_response({"name": filename, "subfolder": subfolder, "type": folder_type})

    @routes.get("/view")
    async def view(request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename")
        if not filename:
            return web.Response(status=404)
        if filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        folder_type = request.query.get("type", "output")
        base = {"input": standin.input_dir, "temp": standin.temp_dir, "output": standin.output_dir}.get(folder_type)
        if base is None:
            return web.Response(status=400)
        folder = (base / request.query.get("subfolder", "")).resolve()
        if os.path.commonpath((str(folder), str(base.resolve()))) != str(base.resolve()):
            return web.Response(status=403)
        path = folder / filename
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return web.Response(
            body=path.read_bytes(),
            content_type=content_type,
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    @routes.get("/ws")
    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # A second socket with the same clientId takes over; the first hears nothing more.
        standin.sockets[sid] = ws
        standin.counters["ws_connections"] += 1
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "status",
                        "data": {"status": {"exec_info": {"queue_remaining": standin.queue_remaining()}}, "sid": sid},
                    }
                )
            )
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        decoded = json.loads(message.data)
                    except ValueError:
                        continue
                    if isinstance(decoded, dict) and decoded.get("type") == "feature_flags":
                        await ws.send_str(json.dumps({"type": "feature_flags", "data": standin.recorded["/features"]}))
        finally:
            if standin.sockets.get(sid) is ws:
                del standin.sockets[sid]
        return ws

    # --- the rekindle_files extension (comfyui_extension/rekindle_files), off with --no-files-extension --
    def _file_path(item: Any) -> Path | None:
        if not isinstance(item, dict):
            return None
        base = {"input": standin.input_dir, "temp": standin.temp_dir, "output": standin.output_dir}.get(
            str(item.get("type") or "output")
        )
        filename = os.path.basename(str(item.get("filename") or ""))
        if base is None or not filename:
            return None
        path = (base / str(item.get("subfolder") or "") / filename).resolve()
        return path if os.path.commonpath((str(path), str(base.resolve()))) == str(base.resolve()) else None

    @routes.post("/rekindle/files/delete")
    async def delete_files(request: web.Request) -> web.Response:
        if not standin.config.files_extension or standin.faults.get("no_files_extension"):
            return web.Response(status=404)
        body = await _json_or_empty(request)
        removed = 0
        for item in body.get("files") or []:
            path = _file_path(item)
            if path is None:
                return json_response({"error": f"not a file of ours: {item!r}"}, 400)
            if path.is_file():
                path.unlink()
                removed += 1
        standin.counters["files_removed"] += removed
        return json_response({"removed": removed})

    @routes.get("/rekindle/disk")
    async def disk(request: web.Request) -> web.Response:
        if not standin.config.files_extension or standin.faults.get("no_files_extension"):
            return web.Response(status=404)
        usage = shutil.disk_usage(standin.config.base_dir)
        counts = {
            name: sum(1 for path in folder.rglob("*") if path.is_file())
            for name, folder in (("input", standin.input_dir), ("output", standin.output_dir))
        }
        return json_response({"total": usage.total, "used": usage.used, "free": usage.free, "files": counts})

    # --- control routes for tests (not ComfyUI's) ------------------------------------
    @routes.post("/_standin/faults")
    async def set_faults(request: web.Request) -> web.Response:
        faults = await _json_or_empty(request)
        try:
            for raw in (faults.get("http") or {}).values():
                HttpFault.parse(raw)
        except (AttributeError, TypeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        standin.faults.update(faults)
        return json_response(standin.faults)

    @routes.get("/_standin/state")
    async def get_state(request: web.Request) -> web.Response:
        return json_response(
            {
                "counters": dict(standin.counters),
                "faults": standin.faults,
                "queue_remaining": standin.queue_remaining(),
                "history": list(standin.history),
                "loaded_models": list(standin.loaded_models or []),
                "pid": os.getpid(),
            }
        )

    @routes.get("/_standin/prompts")
    async def get_record(request: web.Request) -> web.Response:
        return json_response(standin.record)

    @routes.post("/_standin/reset")
    async def reset(request: web.Request) -> web.Response:
        standin.faults.clear()
        standin.counters.clear()
        standin.forget()
        standin.counters.clear()
        standin.record.clear()
        if standin.config.record_path is not None:
            standin.config.record_path.write_text("")
        for folder in (standin.input_dir, standin.output_dir, standin.temp_dir):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
        return json_response({"ok": True})

    @routes.post("/_standin/restart")
    async def restart(request: web.Request) -> web.Response:
        standin.forget()
        return json_response({"ok": True})

    @web.middleware
    async def http_faults(request: web.Request, handler: Any) -> web.StreamResponse:
        fault = None if request.path.startswith("/_standin") else standin.http_fault(request.method, request.path)
        if fault is None or fault.status == 0:
            if fault is not None:
                await asyncio.sleep(fault.delay)
            response: web.StreamResponse = await handler(request)
            return response
        if fault.after:
            await handler(request)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        return fault.response()

    app = web.Application(client_max_size=200 * 1024 * 1024, middlewares=[http_faults])
    app.add_routes(routes)
    add_api_aliases(app)

    async def start_worker(app: web.Application) -> None:
        app["worker"] = asyncio.ensure_future(standin.worker())

    app.on_startup.append(start_worker)
    return app


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def add_api_aliases(app: web.Application) -> None:
    """Every route also under ``/api/``, as ComfyUI serves them."""
    for resource in list(app.router.resources()):
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if not path or path.startswith("/_standin"):
            continue
        for route in list(resource):
            if route.method == "HEAD":
                continue
            app.router.add_route(route.method, "/api" + path, route.handler)
