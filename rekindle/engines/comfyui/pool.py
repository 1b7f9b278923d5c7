"""The ComfyUI node pool: the ``comfyui`` engine, a list of ComfyUI servers used as one.

One ``ComfyNodePool`` per worker process (``get_pool()``), shared by its threads. It asks its
``NodeScheduler`` (``scheduler.py``) for a node, checks the workflow against the node's
``/object_info``, and hands the try to a ``PromptRun`` (``prompt.py``); when a node cannot
finish the run (down, busy, it lost the prompt) the run goes to another node, only once
the prompt has been stopped on the first one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rekindle.engines.base import (
    CancelCheck,
    EngineCanceled,
    EngineResult,
    InputImage,
    NodeHealth,
    PermanentEngineError,
    ProgressCallback,
    RunRequest,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.engines.comfyui.client import NodeBusy, NodeDown, NodeError
from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.prompt import (
    GraphBuilder,
    MoveOn,
    Progress,
    PromptRun,
    RunContext,
    default_client_name,
    safe_name,
)
from rekindle.engines.comfyui.scheduler import (
    PROBE_TIMEOUT_SECONDS,
    LocalNodeScheduler,
    NodeScheduler,
    NoNodeAvailable,
    NoNodeReason,
)

__all__ = ["ComfyNodePool", "GraphBuilder", "PoolConfig", "get_pool"]

logger = logging.getLogger(__name__)

_PLACEHOLDER_SUFFIX = ".png"


class ComfyNodePool:
    """The ``comfyui`` engine: a list of ComfyUI servers used as one."""

    name = "comfyui"

    def __init__(self, config: PoolConfig, scheduler: NodeScheduler | None = None) -> None:
        if not config.urls:
            raise ValueError("ComfyNodePool needs at least one node URL (COMFYUI_URLS)")
        self.config = config
        self.client_name = config.client_name or default_client_name()
        self.scheduler: NodeScheduler = scheduler or LocalNodeScheduler(config)

    # --- running --------------------------------------------------------------------
    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
    ) -> EngineResult:
        from rekindle.workflows import WorkflowParameterError, get_workflow

        try:
            workflow = get_workflow(request.workflow)
        except KeyError:
            raise PermanentEngineError(
                "unknown_workflow", f"There is no workflow named {request.workflow!r}."
            ) from None
        try:
            params = workflow.validate(request.params)
        except WorkflowParameterError as exc:
            raise PermanentEngineError("invalid_parameters", exc.message, {"fields": exc.fields}) from exc
        prefix = f"rekindle/{safe_name(request.run_id)}"
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
        """Run a graph built by ``build_graph`` on the best node, moving to another node if one cannot finish it."""
        context = RunContext(
            run_id=run_id,
            deadline=time.monotonic() + timeout,
            progress=Progress(on_progress),
            should_cancel=should_cancel,
            on_submitted=on_submitted,
            client_name=self.client_name,
        )
        placeholders = {image.param: f"preflight_{image.param}{_PLACEHOLDER_SUFFIX}" for image in images}
        excluded: dict[str, list[str]] = {}
        lost_on: list[str] = []
        resubmits = 0
        while True:
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled before it reached a node.")
            try:
                slot = self.scheduler.acquire(
                    workflow_name,
                    exclude=excluded,
                    avoid=lost_on,
                    deadline=min(context.deadline, time.monotonic() + self.config.slot_wait_seconds),
                    should_cancel=should_cancel,
                )
            except NoNodeAvailable as exc:
                if exc.reason == "busy" and time.monotonic() >= context.deadline:
                    raise TransientEngineError(
                        "timeout", f"No ComfyUI node was free within the run's {timeout:.0f}s."
                    ) from None
                raise self._no_node_error(workflow_name, exc.reason, excluded) from None
            try:
                try:
                    problems = self.scheduler.preflight(slot.url, workflow_name, build_graph(placeholders))
                except NodeBusy as exc:
                    self.scheduler.mark_busy(slot.url, exc.retry_after, exc.reason)
                    continue
                except NodeDown as exc:
                    raise MoveOn("down", exc.reason, error=exc, stopped="not_sent") from None
                except NodeError as exc:
                    # /object_info refused (a 4xx): whatever answers there cannot run workflows.
                    problems = [exc.reason]
                if problems:
                    logger.warning("Workflow %s cannot run on %s: %s", workflow_name, slot.url, "; ".join(problems))
                    excluded[slot.url] = problems
                    continue
                return PromptRun(slot, self.scheduler, self.config, context).run(build_graph, images)
            except MoveOn as move:
                resubmits += self._moved(slot.url, move, run_id)
                lost_on.append(slot.url)
                if resubmits > self.config.max_resubmits:
                    raise self._too_many_moves(slot.url, move, resubmits) from None
            finally:
                self.scheduler.release(slot)
            if time.monotonic() >= context.deadline:
                raise TransientEngineError("timeout", f"The run did not finish within {timeout:.0f}s.")

    def _moved(self, url: str, move: MoveOn, run_id: str) -> int:
        """Record why the run left ``url``; how many resubmits that costs (a busy node's refusal costs none)."""
        if move.stopped == "unconfirmed":
            self.scheduler.mark_down(url, f"did not confirm our prompt stopped: {move.reason}")
            raise TransientEngineError(
                "stop_unconfirmed",
                f"ComfyUI node {url} could not finish the run ({move.reason}) and did not confirm its prompt "
                f"stopped within {self.config.stop_confirm_seconds:.0f}s, so the run was sent nowhere else.",
                {"node": url, **(move.error.details if move.error else {})},
            )
        if move.why == "busy":
            self.scheduler.mark_busy(url, move.retry_after, move.reason)
            return 0
        if move.why == "down":
            self.scheduler.mark_down(url, move.reason)
        logger.warning(
            "Run %s left %s (%s: %s); the prompt there is %s", run_id, url, move.why, move.reason, move.stopped
        )
        return 1

    def _too_many_moves(self, url: str, move: MoveOn, resubmits: int) -> TransientEngineError:
        details: dict[str, Any] = {"node": url, "resubmits": resubmits - 1}
        if move.error is not None:
            details.update(move.error.details)
        if move.why == "lost":
            return TransientEngineError("prompt_lost", f"ComfyUI node {url} lost the prompt {resubmits} times", details)
        return TransientEngineError("node_unavailable", f"ComfyUI node {url} stopped answering: {move.reason}", details)

    def _no_node_error(self, workflow: str, reason: NoNodeReason, excluded: Mapping[str, list[str]]) -> Exception:
        if excluded and reason == "excluded":
            listing = "; ".join(f"{url}: {', '.join(problems)}" for url, problems in excluded.items())
            return PermanentEngineError(
                "preflight_failed",
                f"Workflow {workflow!r} cannot run on any ComfyUI node: {listing}",
                {"workflow": workflow, "nodes": dict(excluded)},
            )
        views = self.scheduler.views()
        errors = {view.url: view.last_error for view in views if view.last_error}
        detail = "; ".join(f"{url}: {error}" for url, error in errors.items())
        if reason == "busy":
            return TransientEngineError(
                "nodes_busy", f"Every ComfyUI node is busy; try again later. {detail}".strip(), {"nodes": errors}
            )
        return TransientEngineError(
            "nodes_unavailable", f"No ComfyUI node is answering. {detail}".strip(), {"nodes": errors}
        )

    # --- health and admin ----------------------------------------------------------
    def health(self, workflows: Sequence[str] | None = None) -> list[NodeHealth]:
        """Each node's state, its queue, and whether each workflow passes its preflight there."""
        builders = self._health_builders(workflows)
        report: list[NodeHealth] = []
        for url in self.scheduler.urls:
            client = self.scheduler.client(url)
            try:
                queue = client.queue(timeout=PROBE_TIMEOUT_SECONDS)
            except NodeError as exc:
                if isinstance(exc, NodeBusy):
                    self.scheduler.mark_busy(url, exc.retry_after, exc.reason)
                elif isinstance(exc, NodeDown):
                    self.scheduler.mark_down(url, exc.reason)
                view = self.scheduler.view(url)
                report.append(NodeHealth(node=url, healthy=False, last_workflow=view.last_workflow, detail=exc.reason))
                continue
            self.scheduler.mark_answering(url)
            self.scheduler.note_queue(url, len(queue))
            preflight: dict[str, list[str]] = {}
            try:
                for name, build in builders.items():
                    preflight[name] = self.scheduler.preflight(url, name, build())
            except NodeError as exc:
                report.append(NodeHealth(node=url, healthy=False, detail=exc.reason, preflight=preflight))
                continue
            view = self.scheduler.view(url)
            report.append(
                NodeHealth(
                    node=url,
                    healthy=True,
                    queue_length=len(queue),
                    last_workflow=view.last_workflow,
                    detail=f"{view.inflight} of our prompts running",
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
        """Stop a prompt another process started: drop it if it waits, interrupt it if it runs. Best effort:
        the run that owns it notices through its own ``should_cancel`` and confirms the stop."""
        for exc in self.scheduler.client(node).stop_prompt(prompt_id):
            logger.warning("Could not cancel prompt %s on %s: %s", prompt_id, node, exc.reason)


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
