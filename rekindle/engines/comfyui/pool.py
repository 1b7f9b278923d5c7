"""The ComfyUI node pool: the ``comfyui`` engine, a list of ComfyUI servers used as one.

One ``ComfyNodePool`` per worker process (``get_pool()``), shared by its threads. It asks its
``NodeScheduler`` (``scheduler.py``; ``fleet.py`` when the state is shared through Redis) for a
node, checks the workflow against the node's ``/object_info``, and hands the try to a
``PromptRun`` (``prompt.py``); when a node cannot finish the run (down, busy, it lost the
prompt) the run goes to another node, only once the prompt has been stopped on the first one.

A fleet outage (no node up) is a wait, not a failure: the run waits up to
``outage_wait_seconds`` for a node to answer, its deadline moved by the time it waited,
and tells its caller it waits for a node (``RunHooks.waiting``). With overflow configured,
a run that would wait longer than ``OVERFLOW_AFTER_SECONDS`` for a slot (estimated, or
actually waited) goes to RunPod instead, within ``OverflowBudget``'s limits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from rekindle.engines.base import (
    NO_HOOKS,
    CancelCheck,
    EngineCanceled,
    EngineResult,
    InputImage,
    NodeHealth,
    PermanentEngineError,
    ProgressCallback,
    RunHooks,
    RunRequest,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.engines.comfyui import metrics
from rekindle.engines.comfyui.client import NodeBusy, NodeDown, NodeError
from rekindle.engines.comfyui.config import OverflowConfig, PoolConfig
from rekindle.engines.comfyui.overflow import OverflowBudget, OverflowDay
from rekindle.engines.comfyui.prompt import (
    GraphBuilder,
    MoveOn,
    Progress,
    PromptRun,
    RunContext,
    default_client_name,
    resume_earlier_prompt,
    safe_name,
)
from rekindle.engines.comfyui.scheduler import (
    PROBE_TIMEOUT_SECONDS,
    LocalNodeScheduler,
    NodeScheduler,
    NoNodeAvailable,
    NoNodeReason,
    Slot,
)

__all__ = ["ComfyNodePool", "GraphBuilder", "PoolConfig", "get_pool"]

logger = logging.getLogger(__name__)

_PLACEHOLDER_SUFFIX = ".png"
# How often a run that waits through an outage looks at the nodes again.
_OUTAGE_TICK_SECONDS = 0.25
# Waiting longer than this for a slot shows on the attempt as waiting for a node.
_WAITING_SHOWN_AFTER_SECONDS = 1.0

# How many nodes a paid run tries in one try when each fails it with an execution error (``_retries_elsewhere``).
PAID_EXECUTION_ERROR_NODES = 2

# Which runs are served first when they wait for a slot, by workflow kind (a bulk requeue says so itself).
KIND_PRIORITY = {"animate_hd": "paid", "restore": "interactive", "animate_preview": "interactive"}


class Overflow:
    """Where overflowing runs go (an engine with ``run``, in practice RunPod) and what they may spend."""

    def __init__(self, config: OverflowConfig, engine: Any, budget: OverflowBudget) -> None:
        self.config = config
        self.engine = engine
        self.budget = budget


class ComfyNodePool:
    """The ``comfyui`` engine: a list of ComfyUI servers used as one."""

    name = "comfyui"

    def __init__(
        self, config: PoolConfig, scheduler: NodeScheduler | None = None, overflow: Overflow | None = None
    ) -> None:
        if not config.urls:
            raise ValueError("ComfyNodePool needs at least one node URL (COMFYUI_URLS)")
        self.config = config
        self.client_name = config.client_name or default_client_name()
        self.scheduler: NodeScheduler = scheduler or LocalNodeScheduler(config)
        self.overflow = overflow

    # --- running --------------------------------------------------------------------
    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
        hooks: RunHooks = NO_HOOKS,
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
        priority = request.priority or KIND_PRIORITY.get(workflow.kind, "interactive")

        def overflow(reason: str) -> EngineResult | None:
            return self._overflow(request, reason, on_progress, should_cancel, on_submitted, hooks)

        if request.earlier_node and request.earlier_prompt_id:
            resumed = self._resume(
                request,
                timeout=min(request.timeout, kind_timeout),
                on_progress=on_progress,
                should_cancel=should_cancel,
                hooks=hooks,
            )
            if resumed is not None:
                return resumed

        if self.overflow is not None:
            wait, how = self.scheduler.estimate_wait(workflow.name, priority)
            if wait > self.overflow.config.after_seconds:
                result = overflow(f"estimated wait {wait:.0f}s for a node slot ({how})")
                if result is not None:
                    return result
        return self.run_graph(
            lambda names: workflow.build(params, names, filename_prefix=prefix),
            workflow_name=workflow.name,
            run_id=request.run_id,
            images=request.images,
            timeout=min(request.timeout, kind_timeout),
            on_progress=on_progress,
            should_cancel=should_cancel,
            on_submitted=on_submitted,
            priority=priority,
            hooks=hooks,
            overflow=overflow if self.overflow is not None else None,
        )

    def _overflow(
        self,
        request: RunRequest,
        reason: str,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        on_submitted: SubmittedCallback | None,
        hooks: RunHooks,
    ) -> EngineResult | None:
        """The run on RunPod, or None (logged and counted) when the limits leave no room for it."""
        assert self.overflow is not None
        ticket, refused = self.overflow.budget.try_start(self.scheduler.service_seconds(request.workflow))
        if ticket is None:
            metrics.OVERFLOW_REFUSED.labels(reason=refused).inc()
            logger.info(
                "overflow.refused: run %s stays in the own pool (%s): %s",
                request.run_id,
                refused,
                reason,
                extra={"event": "overflow.refused", "run": request.run_id, "why": refused},
            )
            hooks.route("comfyui", f"own pool: overflow refused ({_REFUSED.get(refused, refused)}); {reason}")
            return None
        metrics.OVERFLOW_RUNS.labels(reason="wait").inc()
        logger.info(
            "overflow.start: run %s goes to RunPod: %s",
            request.run_id,
            reason,
            extra={"event": "overflow.start", "run": request.run_id},
        )
        hooks.route("runpod", f"overflow to RunPod: {reason}")
        used = 0.0

        def usage(node: str, seconds: float) -> None:
            nonlocal used
            used += seconds
            hooks.used(node, seconds)

        try:
            return self.overflow.engine.run(  # type: ignore[no-any-return]
                request,
                on_progress=on_progress,
                should_cancel=should_cancel,
                on_submitted=on_submitted,
                hooks=RunHooks(waiting=hooks.waiting, routed=hooks.routed, usage=usage),
            )
        finally:
            self.overflow.budget.finish(ticket, used)

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
        priority: str = "interactive",
        hooks: RunHooks = NO_HOOKS,
        overflow: Callable[[str], EngineResult | None] | None = None,
    ) -> EngineResult:
        """Run a graph built by ``build_graph`` on the best node, moving to another node if one cannot finish it.

        ``overflow(reason)``, when given, is asked to take the run once it has waited
        ``OVERFLOW_AFTER_SECONDS`` for a slot; None from it means wait on.
        """
        context = RunContext(
            run_id=run_id,
            deadline=time.monotonic() + timeout,
            progress=Progress(on_progress),
            should_cancel=should_cancel,
            on_submitted=on_submitted,
            client_name=self.client_name,
            timeout=timeout,
            hooks=hooks,
        )
        placeholders = {image.param: f"preflight_{image.param}{_PLACEHOLDER_SUFFIX}" for image in images}
        excluded: dict[str, list[str]] = {}
        lost_on: list[str] = []
        resubmits = 0
        outage_since: float | None = None
        waiting_shown = False
        overflow_after = self.overflow.config.after_seconds if self.overflow is not None else 0.0
        # A paid run's first execution error, kept while the run tries other nodes, and how many failed it.
        execution_error: PermanentEngineError | None = None
        execution_failures = 0

        def show_waiting() -> None:
            nonlocal waiting_shown
            if not waiting_shown:
                waiting_shown = True
                hooks.wait("node")

        while True:
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled before it reached a node.")
            asked = time.monotonic()
            wait_until = min(context.deadline, asked + self.config.slot_wait_seconds)
            if overflow is not None:
                wait_until = min(wait_until, asked + overflow_after)
            metrics.WAITING_RUNS.labels(priority=priority).inc()
            try:
                slot = self.scheduler.acquire(
                    workflow_name,
                    priority=priority,
                    exclude=excluded,
                    avoid=lost_on,
                    deadline=wait_until,
                    should_cancel=should_cancel,
                    on_wait=show_waiting,
                )
            except NoNodeAvailable as exc:
                if execution_error is not None and exc.reason != "busy":
                    raise self._paid_execution_failure(execution_error, execution_failures) from None
                now = time.monotonic()
                if exc.reason == "down":
                    if outage_since is None:
                        outage_since = now
                        show_waiting()
                        metrics.FLEET_OUTAGE.set(1)
                        logger.warning(
                            "fleet.outage_wait: run %s waits for a node (none is up)",
                            run_id,
                            extra={"event": "fleet.outage_wait", "run": run_id},
                        )
                    if now - outage_since >= self.config.outage_wait_seconds:
                        metrics.OUTAGE_WAITS.labels(outcome="failed").inc()
                        raise self._no_node_error(
                            workflow_name, exc.reason, excluded, waited=now - outage_since
                        ) from None
                    self._sleep(_OUTAGE_TICK_SECONDS, should_cancel)
                    continue
                if exc.reason == "busy" and overflow is not None and now < context.deadline:
                    result = overflow(f"waited {now - asked:.0f}s for a node slot (OVERFLOW_AFTER_SECONDS)")
                    if result is not None:
                        return result
                    overflow = None  # refused: wait for the own pool from now on
                    continue
                if exc.reason == "busy" and now >= context.deadline:
                    raise TransientEngineError(
                        "timeout", f"No ComfyUI node was free within the run's {timeout:.0f}s."
                    ) from None
                raise self._no_node_error(workflow_name, exc.reason, excluded) from None
            finally:
                metrics.WAITING_RUNS.labels(priority=priority).dec()
            # From here the slot is ours: whatever fails (the attempt's row, a node), it goes back.
            hold = _Hold(self.scheduler, slot)
            try:
                got = hold.since
                if outage_since is not None:
                    # The outage's wait is not the run's: it keeps the time it had left.
                    context = replace(context, deadline=context.deadline + (got - outage_since))
                    logger.warning(
                        "fleet.outage_over: run %s found a node after %.1fs",
                        run_id,
                        got - outage_since,
                        extra={"event": "fleet.outage_over", "run": run_id},
                    )
                    metrics.FLEET_OUTAGE.set(0)
                    metrics.OUTAGE_WAITS.labels(outcome="recovered").inc()
                    outage_since = None
                if waiting_shown:
                    waiting_shown = False
                    hooks.wait("")
                metrics.WAITING_FOR_NODE_SECONDS.labels(priority=priority).observe(got - asked)
                if not resubmits:
                    hooks.route(
                        "comfyui",
                        "own pool: a node slot was free"
                        if got - asked < _WAITING_SHOWN_AFTER_SECONDS
                        else f"own pool: waited {got - asked:.0f}s for a node slot",
                    )
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
                try:
                    result = PromptRun(slot, self.scheduler, self.config, context, on_node_free=hold.release).run(
                        build_graph, images
                    )
                except PermanentEngineError as exc:
                    if not self._retries_elsewhere(exc, priority):
                        raise
                    execution_failures += 1
                    execution_error = execution_error or exc
                    if execution_failures >= PAID_EXECUTION_ERROR_NODES:
                        raise self._paid_execution_failure(execution_error, execution_failures) from None
                    excluded[slot.url] = [f"execution error: {exc.message}"]
                    logger.warning(
                        "Paid run %s failed on %s (%s); it tries another node", run_id, slot.url, exc.message
                    )
                    continue
                # How long a run holds a node, as the waits are estimated from.
                self.scheduler.note_service(workflow_name, hold.seconds())
                return result
            except MoveOn as move:
                resubmits += self._moved(slot.url, move, run_id)
                lost_on.append(slot.url)
                if resubmits > self.config.max_resubmits:
                    raise self._too_many_moves(slot.url, move, resubmits) from None
            finally:
                hold.release()
            if time.monotonic() >= context.deadline:
                raise TransientEngineError("timeout", f"The run did not finish within {timeout:.0f}s.")

    def _resume(
        self,
        request: RunRequest,
        *,
        timeout: float,
        on_progress: ProgressCallback | None,
        should_cancel: CancelCheck | None,
        hooks: RunHooks,
    ) -> EngineResult | None:
        """The result of the prompt an earlier try of this run left on one of our nodes, or None to run anew.

        No slot is taken: the prompt is already on the node, in its queue or done.
        """
        url = request.earlier_node.rstrip("/")
        if url not in {u.rstrip("/") for u in self.config.urls}:
            return None
        context = RunContext(
            run_id=request.run_id,
            deadline=time.monotonic() + timeout,
            progress=Progress(on_progress),
            should_cancel=should_cancel,
            on_submitted=None,
            client_name=self.client_name,
            timeout=timeout,
            hooks=hooks,
        )
        slot = Slot(url=url, client=self.scheduler.client(url))
        return resume_earlier_prompt(slot, self.scheduler, self.config, context, request.earlier_prompt_id)

    @staticmethod
    def _sleep(seconds: float, should_cancel: CancelCheck | None) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled while it waited for a node.")
            time.sleep(min(left, 0.1))

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
            if move.stopped == "not_sent":
                # Nothing reached the node, so nothing was lost there: no resubmit spent (a fleet
                # that goes down node by node moves a run once per node it tries).
                return 0
        logger.warning(
            "Run %s left %s (%s: %s); the prompt there is %s", run_id, url, move.why, move.reason, move.stopped
        )
        return 1

    @staticmethod
    def _retries_elsewhere(exc: PermanentEngineError, priority: str) -> bool:
        """Whether a run that failed with ``exc`` on its node tries another node rather than fail.

        ComfyUI reports a node's own trouble (a CUDA error, a broken custom node, a bad
        model file on its disk) as the same execution error as a workflow that cannot run
        anywhere. A free run fails at once and the person can try again. A paid HD run is a
        promise: it tries another node, and once ``PAID_EXECUTION_ERROR_NODES`` nodes failed
        it (or no other node is left) it goes back to the queue (``_paid_execution_failure``),
        so only a failure that outlasts the attempt's tries, and their backoff, fails it.
        """
        return exc.code == "execution_failed" and priority == "paid"

    @staticmethod
    def _paid_execution_failure(first: PermanentEngineError, failures: int) -> TransientEngineError:
        return TransientEngineError(
            first.code,
            f"{first.message} (a paid run: {failures} node(s) failed it this try; it is tried again later)",
            {**first.details, "nodes_failed": failures},
        )

    def _too_many_moves(self, url: str, move: MoveOn, resubmits: int) -> TransientEngineError:
        details: dict[str, Any] = {"node": url, "resubmits": resubmits - 1}
        if move.error is not None:
            details.update(move.error.details)
        if move.why == "lost":
            return TransientEngineError("prompt_lost", f"ComfyUI node {url} lost the prompt {resubmits} times", details)
        return TransientEngineError("node_unavailable", f"ComfyUI node {url} stopped answering: {move.reason}", details)

    def _no_node_error(
        self, workflow: str, reason: NoNodeReason, excluded: Mapping[str, list[str]], *, waited: float = 0.0
    ) -> Exception:
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
            "nodes_unavailable",
            f"No ComfyUI node answered for {waited:.0f}s (FLEET_OUTAGE_WAIT_SECONDS). {detail}".strip()
            if waited
            else f"No ComfyUI node is answering. {detail}".strip(),
            {"nodes": errors, "waited_seconds": round(waited, 1)},
        )

    # --- health and admin ----------------------------------------------------------
    def health(self, workflows: Sequence[str] | None = None) -> list[NodeHealth]:
        """Each node's state (up, down, draining, drained), its queue, its disk, and whether each workflow
        passes its preflight there."""
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
                report.append(
                    NodeHealth(
                        node=url,
                        healthy=False,
                        last_workflow=view.last_workflow,
                        detail=exc.reason,
                        state="draining" if view.draining else "down",
                    )
                )
                continue
            self.scheduler.mark_answering(url)
            self.scheduler.note_queue(url, len(queue))
            disk = describe_disk(client.disk(timeout=PROBE_TIMEOUT_SECONDS))
            preflight: dict[str, list[str]] = {}
            try:
                for name, build in builders.items():
                    preflight[name] = self.scheduler.preflight(url, name, build())
            except NodeError as exc:
                report.append(NodeHealth(node=url, healthy=False, detail=exc.reason, preflight=preflight, state="down"))
                continue
            view = self.scheduler.view(url)
            report.append(
                NodeHealth(
                    node=url,
                    healthy=True,
                    queue_length=len(queue),
                    last_workflow=view.last_workflow,
                    detail=f"{view.inflight} of our prompts running ({self.scheduler.backend} state)",
                    preflight=preflight,
                    state=view.state,
                    disk=disk,
                )
            )
        metrics.FLEET_UP_NODES.set(sum(1 for health in report if health.healthy))
        return report

    def set_draining(self, url: str, draining: bool) -> bool:
        """Drain a node (no new prompts; its own run to their end) or put it back to work; False if unknown."""
        url = url.rstrip("/")
        if url not in self.scheduler.urls:
            return False
        self.scheduler.set_draining(url, draining)
        return True

    def overflow_today(self) -> OverflowDay | None:
        return self.overflow.budget.today() if self.overflow is not None else None

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


class _Hold:
    """A slot held for one try, given back once: when the node has ended our prompt, or when the try ends."""

    def __init__(self, scheduler: NodeScheduler, slot: Slot) -> None:
        self.scheduler = scheduler
        self.slot = slot
        self.since = time.monotonic()
        self.released_at: float | None = None

    def release(self) -> None:
        if self.released_at is None:
            self.released_at = time.monotonic()
            self.scheduler.release(self.slot)

    def seconds(self) -> float:
        return (self.released_at or time.monotonic()) - self.since


def describe_disk(disk: Mapping[str, Any] | None) -> str:
    """``"412 GB free of 1.0 TB (3 inputs, 18 outputs)"`` from the extension's answer; "" when there is none."""
    if not disk:
        return ""
    try:
        free, total = float(disk["free"]), float(disk["total"])
    except (KeyError, TypeError, ValueError):
        return ""
    files = disk.get("files") if isinstance(disk.get("files"), Mapping) else {}
    counted = f" ({files.get('input', 0)} inputs, {files.get('output', 0)} outputs)" if files else ""
    return f"{_bytes(free)} free of {_bytes(total)}{counted}"


def _bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


_REFUSED = {
    "concurrency": "OVERFLOW_MAX_CONCURRENT runs are on RunPod already",
    "budget": "today's OVERFLOW_DAILY_GPU_SECONDS are spent",
    "redis_unreachable": "the shared budget cannot be read",
}

_pool: ComfyNodePool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ComfyNodePool:
    """This process's pool, built from settings on first use (and again if the settings changed)."""
    global _pool
    config = PoolConfig.from_settings()
    overflow_config = OverflowConfig.from_settings()
    with _pool_lock:
        if (
            _pool is None
            or _pool.config != config
            or (_pool.overflow.config if _pool.overflow else OverflowConfig()) != overflow_config
        ):
            if _pool is not None:
                close = getattr(_pool.scheduler, "close", None)
                if close is not None:
                    close()
            _pool = build_pool(config, overflow_config)
        return _pool


def build_pool(config: PoolConfig, overflow_config: OverflowConfig | None = None) -> ComfyNodePool:
    """A pool on the fleet state ``config`` names (Redis or this process), with overflow when it is on."""
    scheduler: NodeScheduler
    client = None
    if config.fleet_state == "redis":
        import redis

        from rekindle.engines.comfyui.fleet import RedisNodeScheduler

        scheduler = RedisNodeScheduler(config)
        client = redis.Redis.from_url(config.redis_url, socket_timeout=1.0, socket_connect_timeout=0.5)
    else:
        scheduler = LocalNodeScheduler(config)
    overflow = None
    if overflow_config is not None and overflow_config.enabled:
        from rekindle.engines.runpod import RunPodEngine

        budget = OverflowBudget(overflow_config, client, namespace=config.fleet_namespace)
        overflow = Overflow(overflow_config, RunPodEngine.from_settings(), budget)
    return ComfyNodePool(config, scheduler, overflow)


def fleet_nodes_up() -> tuple[int, int]:
    """(nodes up, nodes configured) as this process's pool sees them, without calling any node.

    For a readiness check ("at least one node up") and the metrics: with the shared state it is
    the fleet's view (the probes of every process), otherwise this process's.
    """
    views = get_pool().scheduler.views()
    up = sum(1 for view in views if view.up and not view.draining)
    metrics.FLEET_UP_NODES.set(up)
    return up, len(views)
