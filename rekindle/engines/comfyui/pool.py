"""The ComfyUI node pool: picks a node, sends a graph, follows it to the end and downloads the outputs.

One ``ComfyNodePool`` per worker process (``get_pool()``), shared by its threads. What it
knows about each node (down or up, our prompts on it, the workflow it last ran, its
``/object_info``) lives in that process only: processes do not coordinate, except
through the queue length each node reports.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from rekindle.engines.base import (
    CancelCheck,
    EngineCanceled,
    EngineOutput,
    EngineResult,
    InputImage,
    NodeHealth,
    OutputKind,
    PermanentEngineError,
    ProgressCallback,
    RunRequest,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.engines.comfyui.client import ComfyNodeClient, NodeUnavailable, PromptRejected, decode_message
from rekindle.engines.comfyui.preflight import check_graph
from rekindle.engines.comfyui.protocol import (
    Outcome,
    PromptTracker,
    describe_execution_error,
    describe_rejection,
    is_out_of_memory,
    outcome_from_history,
)

logger = logging.getLogger(__name__)

# Builds the API-format graph once the inputs are uploaded: image parameter -> name on the node.
GraphBuilder = Callable[[Mapping[str, str]], Mapping[str, Any]]

# How often a waiting run looks at should_cancel() and the clock.
_TICK_SECONDS = 0.25
_PROBE_TIMEOUT_SECONDS = 3.0
_PLACEHOLDER_SUFFIX = ".png"


@dataclass(frozen=True)
class PoolConfig:
    """How the pool behaves; ``from_settings()`` reads the ``COMFYUI_*`` settings."""

    urls: tuple[str, ...]
    prompts_per_node: int = 1
    # No websocket message for this long: stop listening and poll /history and /queue instead.
    socket_quiet_seconds: float = 30.0
    poll_seconds: float = 1.0
    # A node that stopped answering is probed again after this, doubling up to the maximum.
    node_backoff_seconds: float = 5.0
    node_backoff_max_seconds: float = 300.0
    http_timeout: float = 30.0
    # How long a run waits for a free slot on some node before giving up (transient).
    slot_wait_seconds: float = 60.0
    # How long a run waits for a busy node that has its workflow's models loaded before it
    # takes a free node that would have to switch models.
    affinity_wait_seconds: float = 10.0
    # Runs lost on a node (it died or restarted) are sent again this many times.
    max_resubmits: int = 2
    # Workflow kind -> seconds; a kind not listed uses the workflow file's own timeout.
    kind_timeouts: Mapping[str, float] = field(default_factory=dict)
    client_name: str = ""

    @classmethod
    def from_settings(cls) -> PoolConfig:
        from django.conf import settings

        return cls(
            urls=tuple(settings.COMFYUI_URLS),
            prompts_per_node=settings.COMFYUI_PROMPTS_PER_NODE,
            socket_quiet_seconds=settings.COMFYUI_SOCKET_QUIET_SECONDS,
            poll_seconds=settings.COMFYUI_POLL_SECONDS,
            node_backoff_seconds=settings.COMFYUI_NODE_BACKOFF_SECONDS,
            node_backoff_max_seconds=settings.COMFYUI_NODE_BACKOFF_MAX_SECONDS,
            http_timeout=settings.COMFYUI_HTTP_TIMEOUT,
            slot_wait_seconds=settings.COMFYUI_SLOT_WAIT_SECONDS,
            affinity_wait_seconds=settings.COMFYUI_AFFINITY_WAIT_SECONDS,
            max_resubmits=settings.COMFYUI_MAX_RESUBMITS,
            kind_timeouts={kind: seconds for kind, seconds in settings.COMFYUI_TIMEOUTS.items() if seconds > 0},
            client_name=settings.COMFYUI_CLIENT_NAME,
        )


class NodeState:
    """What this process knows about one node. Mutated only under the pool's lock."""

    def __init__(self, url: str, client: ComfyNodeClient) -> None:
        self.url = url
        self.client = client
        self.inflight = 0
        self.last_workflow = ""
        # Prompts on the node that are not ours, as last seen (status messages, /queue).
        self.foreign_queue = 0
        self.down_until: float | None = None
        self.failures = 0
        self.probing = False
        self.last_error = ""
        self.object_info: dict[str, Any] | None = None
        self.preflight: dict[str, list[str]] = {}

    def is_up(self) -> bool:
        return self.down_until is None

    @property
    def work(self) -> int:
        return self.inflight + self.foreign_queue


class _NoNode(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _PromptLost(Exception):
    """The node no longer knows the prompt (it restarted): neither queued nor in history."""


class _Progress:
    """Forwards progress to the caller as integers that never go back (a resubmit starts again quietly)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = -1

    def __call__(self, percent: int) -> None:
        if self.callback is not None and percent > self.last:
            self.last = percent
            self.callback(percent)


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:80] or "run"


def _default_client_name() -> str:
    return f"rekindle-{_safe_name(socket.gethostname())}-{os.getpid()}"


class ComfyNodePool:
    """The ``comfyui`` engine: a list of ComfyUI servers used as one."""

    name = "comfyui"

    def __init__(self, config: PoolConfig) -> None:
        if not config.urls:
            raise ValueError("ComfyNodePool needs at least one node URL (COMFYUI_URLS)")
        self.config = config
        self.client_name = config.client_name or _default_client_name()
        self.nodes = [
            NodeState(url.rstrip("/"), ComfyNodeClient(url, http_timeout=config.http_timeout)) for url in config.urls
        ]
        self._cond = threading.Condition()

    # --- node choice ------------------------------------------------------------
    def node(self, url: str) -> NodeState | None:
        url = url.rstrip("/")
        return next((node for node in self.nodes if node.url == url), None)

    def mark_down(self, node: NodeState, reason: str) -> None:
        with self._cond:
            node.failures += 1
            delay = min(
                self.config.node_backoff_seconds * 2 ** (node.failures - 1), self.config.node_backoff_max_seconds
            )
            node.down_until = time.monotonic() + delay
            node.last_error = reason
            # A node that comes back may be another install: read its object_info again.
            node.object_info = None
            self._cond.notify_all()
        logger.warning("ComfyUI node %s marked down for %.0fs: %s", node.url, delay, reason)

    def _mark_up(self, node: NodeState) -> None:
        with self._cond:
            if node.down_until is not None:
                logger.info("ComfyUI node %s is back", node.url)
            node.down_until = None
            node.failures = 0
            node.last_error = ""
            node.probing = False
            self._cond.notify_all()

    def _probe_due_nodes(self) -> None:
        """Probe, outside the lock, each down node whose backoff has run out (one thread per node)."""
        now = time.monotonic()
        due: list[NodeState] = []
        with self._cond:
            for node in self.nodes:
                if node.down_until is not None and node.down_until <= now and not node.probing:
                    node.probing = True
                    due.append(node)
        for node in due:
            try:
                node.client.system_stats(timeout=_PROBE_TIMEOUT_SECONDS)
            except NodeUnavailable as exc:
                with self._cond:
                    node.probing = False
                self.mark_down(node, exc.reason)
            else:
                self._mark_up(node)

    def _choose(self, workflow: str, up: list[NodeState], avoid: Iterable[str], waited: float) -> NodeState | None:
        free = [node for node in up if node.inflight < self.config.prompts_per_node]
        if not free:
            return None
        avoid = set(avoid)
        candidates = [node for node in free if node.url not in avoid] or free
        loaded = [node for node in candidates if node.last_workflow == workflow]
        if loaded:
            return min(loaded, key=lambda node: node.work)
        fresh = [node for node in candidates if node.last_workflow == ""]
        if fresh:
            # Nothing loaded there yet: idle capacity, no switch away from anything.
            return min(fresh, key=lambda node: node.work)
        busy_loaded = [node for node in up if node.last_workflow == workflow and node.url not in avoid]
        if busy_loaded and waited < self.config.affinity_wait_seconds:
            # A node with these models loaded will free up soon; a switch costs a model load.
            return None
        return min(candidates, key=lambda node: node.work)

    def pick_node(
        self,
        workflow: str,
        *,
        exclude: Iterable[str] = (),
        avoid: Iterable[str] = (),
        deadline: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> NodeState:
        """Reserve a slot on the best node for ``workflow``; the caller must ``release()`` it.

        Down nodes are skipped (and probed again once their backoff runs out); among the
        rest, a node that last ran the same workflow wins, then the least queued work.
        Waits for a free slot until ``deadline`` (default: the slot wait setting).
        """
        excluded = set(exclude)
        started = time.monotonic()
        if deadline is None:
            deadline = started + self.config.slot_wait_seconds
        while True:
            self._probe_due_nodes()
            with self._cond:
                usable = [node for node in self.nodes if node.url not in excluded]
                if not usable:
                    raise _NoNode("excluded")
                up = [node for node in usable if node.is_up()]
                if not up:
                    raise _NoNode("down")
                chosen = self._choose(workflow, up, avoid, time.monotonic() - started)
                if chosen is not None:
                    chosen.inflight += 1
                    chosen.last_workflow = workflow
                    return chosen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _NoNode("busy")
                self._cond.wait(timeout=min(remaining, _TICK_SECONDS))
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled while it waited for a free node.")

    def release(self, node: NodeState) -> None:
        with self._cond:
            node.inflight = max(0, node.inflight - 1)
            self._cond.notify_all()

    # --- preflight ----------------------------------------------------------------
    def _object_info(self, node: NodeState, *, refresh: bool = False) -> dict[str, Any]:
        info = node.object_info
        if info is None or refresh:
            info = node.client.object_info()
            with self._cond:
                node.object_info = info
        return info

    def preflight(self, node: NodeState, workflow: str, graph: Mapping[str, Any]) -> list[str]:
        """Problems running ``graph`` on ``node``; a failure on cached info is checked again on fresh info."""
        cached = node.object_info is not None
        problems = check_graph(graph, self._object_info(node))
        if problems and cached:
            problems = check_graph(graph, self._object_info(node, refresh=True))
        with self._cond:
            node.preflight[workflow] = problems
        return problems

    # --- running --------------------------------------------------------------------
    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
    ) -> EngineResult:
        from rekindle.workflows import get_workflow

        workflow = get_workflow(request.workflow)
        params = dict(request.params)
        prefix = f"rekindle/{_safe_name(request.run_id)}"
        kind_timeout = self.config.kind_timeouts.get(workflow.kind) or workflow.timeout_seconds
        return self.run_graph(
            lambda names: workflow.build(params, names, filename_prefix=prefix),
            workflow_name=workflow.name,
            run_id=request.run_id,
            images=request.images,
            timeout=min(request.timeout, kind_timeout),
            on_progress=on_progress,
            should_cancel=should_cancel,
            on_submitted=on_submitted,
        )

    def run_graph(
        self,
        build_graph: GraphBuilder,
        *,
        workflow_name: str,
        run_id: str,
        images: Sequence[InputImage],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
    ) -> EngineResult:
        """Run a graph built by ``build_graph`` on the best node, moving to another node if one fails."""
        deadline = time.monotonic() + timeout
        progress = _Progress(on_progress)
        excluded: dict[str, list[str]] = {}
        lost_on: list[str] = []
        resubmits = 0
        while True:
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled before it reached a node.")
            try:
                node = self.pick_node(
                    workflow_name,
                    exclude=excluded,
                    avoid=lost_on,
                    deadline=min(deadline, time.monotonic() + self.config.slot_wait_seconds),
                    should_cancel=should_cancel,
                )
            except _NoNode as exc:
                if exc.reason == "busy" and time.monotonic() >= deadline:
                    raise TransientEngineError(
                        "timeout", f"No ComfyUI node was free within the run's {timeout:.0f}s."
                    ) from None
                raise self._no_node_error(workflow_name, exc.reason, excluded) from None
            try:
                placeholders = {image.param: f"preflight_{image.param}{_PLACEHOLDER_SUFFIX}" for image in images}
                problems = self.preflight(node, workflow_name, build_graph(placeholders))
                if problems:
                    logger.warning("Workflow %s cannot run on %s: %s", workflow_name, node.url, "; ".join(problems))
                    excluded[node.url] = problems
                    continue
                return self._run_on_node(
                    node,
                    build_graph,
                    run_id=run_id,
                    images=images,
                    deadline=deadline,
                    progress=progress,
                    should_cancel=should_cancel,
                    on_submitted=on_submitted,
                )
            except NodeUnavailable as exc:
                self.mark_down(node, exc.reason)
                lost_on.append(node.url)
                resubmits += 1
                if resubmits > self.config.max_resubmits:
                    raise TransientEngineError(
                        "node_unavailable", f"ComfyUI node {node.url} stopped answering: {exc.reason}"
                    ) from exc
            except _PromptLost:
                logger.warning("Prompt of run %s was lost on %s (node restarted); sending it again", run_id, node.url)
                lost_on.append(node.url)
                resubmits += 1
                if resubmits > self.config.max_resubmits:
                    raise TransientEngineError(
                        "prompt_lost", f"ComfyUI node {node.url} lost the prompt {resubmits} times"
                    ) from None
            finally:
                self.release(node)
            if time.monotonic() >= deadline:
                raise TransientEngineError("timeout", f"The run did not finish within {timeout:.0f}s.")

    def _no_node_error(self, workflow: str, reason: str, excluded: Mapping[str, list[str]]) -> Exception:
        if excluded and reason == "excluded":
            listing = "; ".join(f"{url}: {', '.join(problems)}" for url, problems in excluded.items())
            return PermanentEngineError(
                "preflight_failed",
                f"Workflow {workflow!r} cannot run on any ComfyUI node: {listing}",
                {"workflow": workflow, "nodes": dict(excluded)},
            )
        if reason == "busy":
            return TransientEngineError("nodes_busy", "Every ComfyUI node is busy; try again later.")
        detail = "; ".join(f"{node.url}: {node.last_error}" for node in self.nodes if node.last_error)
        return TransientEngineError("nodes_unavailable", f"No ComfyUI node is answering. {detail}".strip())

    def _upload_inputs(self, node: NodeState, run_id: str, images: Sequence[InputImage]) -> dict[str, str]:
        names: dict[str, str] = {}
        for image in images:
            suffix = os.path.splitext(image.filename)[1].lower() or ".png"
            content_type = mimetypes.guess_type(f"x{suffix}")[0] or "application/octet-stream"
            name = f"{_safe_name(run_id)}_{_safe_name(image.param)}{suffix}"
            names[image.param] = node.client.upload_image(name, image.data, content_type)
        return names

    def _run_on_node(
        self,
        node: NodeState,
        build_graph: GraphBuilder,
        *,
        run_id: str,
        images: Sequence[InputImage],
        deadline: float,
        progress: _Progress,
        should_cancel: CancelCheck | None,
        on_submitted: SubmittedCallback | None,
    ) -> EngineResult:
        client = node.client
        graph = build_graph(self._upload_inputs(node, run_id, images))
        prompt_id = str(uuid.uuid4())
        # One client id per run: a second socket with the same id silences the first, and a
        # worker process runs several runs at once.
        client_id = f"{self.client_name}-{uuid.uuid4().hex[:12]}"
        tracker = PromptTracker(graph, prompt_id)
        # Listening before submitting, so no message of the prompt is missed.
        with client.open_socket(client_id) as ws:
            try:
                client.submit(graph, prompt_id=prompt_id, client_id=client_id)
            except PromptRejected as exc:
                message, details = describe_rejection(exc.body)
                raise PermanentEngineError(
                    "prompt_rejected", f"ComfyUI node {node.url} rejected the workflow: {message}", details
                ) from None
            if on_submitted is not None:
                on_submitted(node.url, prompt_id)
            progress(0)
            outcome = self._follow(node, ws, tracker, deadline, progress, should_cancel)
        return self._finish(node, prompt_id, outcome, progress)

    def _stop(self, node: NodeState, prompt_id: str) -> None:
        """Interrupt the prompt if it runs and drop it from the queue if it waits; best effort."""
        actions: list[Callable[[], None]] = [
            lambda: node.client.interrupt(prompt_id),
            lambda: node.client.delete_from_queue([prompt_id]),
        ]
        for action in actions:
            try:
                action()
            except NodeUnavailable as exc:
                logger.warning("Could not stop prompt %s on %s: %s", prompt_id, node.url, exc.reason)

    def _follow(
        self,
        node: NodeState,
        ws: ClientConnection,
        tracker: PromptTracker,
        deadline: float,
        progress: _Progress,
        should_cancel: CancelCheck | None,
    ) -> Outcome:
        prompt_id = tracker.prompt_id
        listening = True
        last_message = time.monotonic()
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if should_cancel is not None and should_cancel():
                self._stop(node, prompt_id)
                raise EngineCanceled("canceled", "The run was canceled.", {"node": node.url, "prompt_id": prompt_id})
            if now >= deadline:
                self._stop(node, prompt_id)
                raise TransientEngineError(
                    "timeout", "The run did not finish in time on the ComfyUI node.", {"node": node.url}
                )
            if listening:
                quiet_left = last_message + self.config.socket_quiet_seconds - now
                if quiet_left <= 0:
                    logger.info("Socket to %s went quiet: polling history for %s", node.url, prompt_id)
                    listening = False
                    continue
                try:
                    raw = ws.recv(timeout=max(0.01, min(_TICK_SECONDS, deadline - now, quiet_left)))
                except TimeoutError:
                    continue
                except (ConnectionClosed, OSError):
                    logger.info("Socket to %s closed during prompt %s: polling history", node.url, prompt_id)
                    listening = False
                    continue
                last_message = time.monotonic()
                message = decode_message(raw)
                if message is None:
                    continue
                tracker.feed(message)
                if message.get("type") == "status" and tracker.queue_remaining is not None:
                    with self._cond:
                        node.foreign_queue = max(0, tracker.queue_remaining - node.inflight)
                progress(tracker.percent)
                if tracker.error is not None or tracker.interrupted is not None:
                    outcome = tracker.outcome_from_messages()
                    assert outcome is not None
                    return outcome
                if tracker.ended:
                    # executing{node: null} comes after the history entry is written.
                    entry = node.client.history(prompt_id)
                    outcome = outcome_from_history(entry) if entry else None
                    if outcome is not None:
                        return outcome
                    listening = False
                continue
            if now >= next_poll:
                outcome = self._poll(node, prompt_id)
                if outcome is not None:
                    return outcome
                next_poll = time.monotonic() + self.config.poll_seconds
            time.sleep(max(0.0, min(_TICK_SECONDS, next_poll - time.monotonic(), deadline - time.monotonic())))

    def _poll(self, node: NodeState, prompt_id: str) -> Outcome | None:
        """The outcome if history has it; None while queued or running; ``_PromptLost`` if the node forgot it."""
        entry = node.client.history(prompt_id)
        if entry is not None:
            return outcome_from_history(entry)
        if prompt_id in node.client.queue():
            return None
        # It may have finished between the two reads.
        entry = node.client.history(prompt_id)
        if entry is not None:
            return outcome_from_history(entry)
        raise _PromptLost(prompt_id)

    def _finish(self, node: NodeState, prompt_id: str, outcome: Outcome, progress: _Progress) -> EngineResult:
        details: dict[str, Any] = {"node": node.url, "prompt_id": prompt_id}
        if outcome.status == "interrupted":
            raise EngineCanceled("interrupted", f"The run was interrupted on ComfyUI node {node.url}.", details)
        if outcome.status == "error":
            error = dict(outcome.error)
            details.update(
                {key: error.get(key) for key in ("node_id", "node_type", "exception_type", "exception_message")}
            )
            message = describe_execution_error(error)
            if is_out_of_memory(error):
                try:
                    node.client.free()
                except NodeUnavailable as exc:
                    logger.warning("Could not free memory on %s: %s", node.url, exc.reason)
                raise TransientEngineError("out_of_memory", f"{node.url} ran out of GPU memory: {message}", details)
            raise PermanentEngineError("execution_failed", message, details)
        outputs: list[EngineOutput] = []
        for file in outcome.outputs:
            data, content_type = node.client.view(file)
            kind: OutputKind = "video" if file.is_video or content_type.startswith("video/") else "image"
            outputs.append(EngineOutput(filename=file.filename, data=data, kind=kind, content_type=content_type))
        progress(100)
        return EngineResult(
            outputs=tuple(outputs),
            engine=self.name,
            node=node.url,
            prompt_id=prompt_id,
            execution_seconds=outcome.execution_seconds,
        )

    # --- health and admin ----------------------------------------------------------
    def health(self, workflows: Sequence[str] | None = None) -> list[NodeHealth]:
        """Each node's state, its queue, and whether each workflow passes its preflight there."""
        builders = self._health_builders(workflows)
        report: list[NodeHealth] = []
        for node in self.nodes:
            try:
                queue = node.client.queue(timeout=_PROBE_TIMEOUT_SECONDS)
            except NodeUnavailable as exc:
                self.mark_down(node, exc.reason)
                report.append(
                    NodeHealth(node=node.url, healthy=False, last_workflow=node.last_workflow, detail=exc.reason)
                )
                continue
            self._mark_up(node)
            preflight: dict[str, list[str]] = {}
            try:
                for name, build in builders.items():
                    preflight[name] = self.preflight(node, name, build())
            except NodeUnavailable as exc:
                report.append(NodeHealth(node=node.url, healthy=False, detail=exc.reason, preflight=preflight))
                continue
            with self._cond:
                node.foreign_queue = max(0, len(queue) - node.inflight)
            report.append(
                NodeHealth(
                    node=node.url,
                    healthy=True,
                    queue_length=len(queue),
                    last_workflow=node.last_workflow,
                    detail=f"{node.inflight} of our prompts running",
                    preflight=preflight,
                )
            )
        return report

    def _health_builders(self, names: Sequence[str] | None) -> dict[str, Callable[[], Mapping[str, Any]]]:
        from rekindle.workflows import all_workflows, get_workflow

        workflows = [get_workflow(name) for name in names] if names is not None else all_workflows()
        builders: dict[str, Callable[[], Mapping[str, Any]]] = {}
        for workflow in workflows:
            placeholders = {param: f"preflight_{param}{_PLACEHOLDER_SUFFIX}" for param in workflow.image_params}

            def build(workflow: Any = workflow, placeholders: dict[str, str] = placeholders) -> Mapping[str, Any]:
                graph: Mapping[str, Any] = workflow.build(
                    workflow.validate({}), placeholders, filename_prefix="rekindle/preflight"
                )
                return graph

            builders[workflow.name] = build
        return builders

    def cancel(self, node: str, prompt_id: str) -> None:
        """Stop a prompt another process started: interrupt it if it runs, drop it if it waits."""
        state = self.node(node) or NodeState(node.rstrip("/"), ComfyNodeClient(node))
        self._stop(state, prompt_id)


_pool: ComfyNodePool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ComfyNodePool:
    """This process's pool, built from settings on first use (and again if the settings changed)."""
    global _pool
    config = PoolConfig.from_settings()
    with _pool_lock:
        if _pool is None or _pool.config != config:
            _pool = ComfyNodePool(config)
        return _pool
