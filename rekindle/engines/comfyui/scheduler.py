"""Node scheduling for the ComfyUI pool: which nodes are up, busy or down, who holds their slots, what they can run.

``NodeScheduler`` is the seam: the pool asks it for a slot on the best node for a workflow,
hands the slot back, and tells it what it learned about a node (down, busy, its queue
length, a prompt it could not stop there). ``LocalNodeScheduler`` keeps all of that in
this process, shared by its threads, which is how the pool has always worked: processes
do not coordinate, except through the queue length each node reports. A scheduler shared
by every worker process (slots as leases, the loaded workflow per node and up/down held in
one store, one prober) implements the same protocol and is passed to ``ComfyNodePool``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rekindle.engines.base import CancelCheck, EngineCanceled
from rekindle.engines.comfyui.client import ComfyNodeClient, NodeError
from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.preflight import check_graph

logger = logging.getLogger(__name__)

# How often a waiting acquire looks at should_cancel() and the clock.
_TICK_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 3.0

NoNodeReason = Literal["excluded", "down", "busy"]


class NoNodeAvailable(Exception):
    """No slot for the run: every usable node is excluded (failed preflight), down, or busy until the deadline."""

    def __init__(self, reason: NoNodeReason) -> None:
        super().__init__(reason)
        self.reason: NoNodeReason = reason


@dataclass(frozen=True)
class Slot:
    """A place reserved for one prompt on one node; give it back with ``NodeScheduler.release``.

    ``token`` is the implementation's own handle on the reservation (a lease id in a shared
    scheduler); the in-process one needs none.
    """

    url: str
    client: ComfyNodeClient
    token: str = ""


@dataclass(frozen=True)
class NodeView:
    """What the scheduler knows about one node, as of the call."""

    url: str
    up: bool
    # Seconds until a down node is probed again (0: up, or due for a probe).
    down_for: float = 0.0
    # Seconds until a busy node takes work again (0: not busy).
    busy_for: float = 0.0
    failures: int = 0
    last_error: str = ""
    inflight: int = 0
    # Prompts on the node that are not ours, as last seen.
    foreign_queue: int = 0
    last_workflow: str = ""
    preflight: Mapping[str, list[str]] = field(default_factory=dict)
    # Our prompts the node may still hold, to be stopped when it answers again.
    abandoned: tuple[str, ...] = ()


class NodeScheduler(Protocol):
    """Chooses nodes and keeps what is known about them. Every method is safe to call from any thread."""

    urls: tuple[str, ...]

    def client(self, url: str) -> ComfyNodeClient:
        """The client for ``url`` (one of ``urls``, or any node URL for a one-off call such as a cancel)."""
        ...

    def acquire(
        self,
        workflow: str,
        *,
        exclude: Iterable[str] = (),
        avoid: Iterable[str] = (),
        deadline: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Slot:
        """A slot on the best node for ``workflow``, waiting for one until ``deadline`` (monotonic seconds).

        ``exclude``: nodes that cannot run it at all. ``avoid``: nodes to use only if no
        other is free (they lost this run before). Raises ``NoNodeAvailable``, or
        ``EngineCanceled`` when ``should_cancel`` says so while waiting.
        """
        ...

    def release(self, slot: Slot) -> None: ...

    def mark_down(self, url: str, reason: str) -> None:
        """The node stopped answering (or answers with server errors): skip it and probe it with backoff."""
        ...

    def mark_busy(self, url: str, retry_after: float | None, reason: str) -> None:
        """The node is up but refuses work for ``retry_after`` seconds (None: the pool's base backoff)."""
        ...

    def mark_answering(self, url: str) -> None:
        """A call to the node succeeded outside a run (a health check): it is up."""
        ...

    def note_queue(self, url: str, queue_length: int) -> None:
        """The node reported ``queue_length`` prompts queued or running, ours included."""
        ...

    def preflight(self, url: str, workflow: str, graph: Mapping[str, Any]) -> list[str]:
        """Problems running ``graph`` on the node (empty: it can run), from its cached ``/object_info``.

        A failure on cached info is checked again on fresh info. Raises ``NodeError`` when
        ``/object_info`` cannot be read.
        """
        ...

    def abandon(self, url: str, prompt_id: str) -> None:
        """A prompt of ours the run could not confirm stopped on the node: stop it there when it answers again."""
        ...

    def view(self, url: str) -> NodeView: ...

    def views(self) -> list[NodeView]: ...


class NodeState:
    """What this process knows about one node. Mutated only under the scheduler's lock."""

    def __init__(self, url: str, client: ComfyNodeClient) -> None:
        self.url = url
        self.client = client
        self.inflight = 0
        self.last_workflow = ""
        self.foreign_queue = 0
        self.down_until: float | None = None
        self.busy_until = 0.0
        self.failures = 0
        self.probing = False
        self.last_error = ""
        self.object_info: dict[str, Any] | None = None
        self.preflight: dict[str, list[str]] = {}
        self.abandoned: set[str] = set()

    def is_up(self) -> bool:
        return self.down_until is None

    @property
    def work(self) -> int:
        return self.inflight + self.foreign_queue


class LocalNodeScheduler:
    """The in-process scheduler: node state in memory, shared by this process's threads.

    Down nodes are probed (``GET /system_stats``) by whichever thread next asks for a slot
    once their backoff has run out, one probe per node at a time.
    """

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.urls = tuple(url.rstrip("/") for url in config.urls)
        self._nodes = {url: NodeState(url, ComfyNodeClient(url, http_timeout=config.http_timeout)) for url in self.urls}
        self._cond = threading.Condition()

    # --- reading -------------------------------------------------------------------
    def client(self, url: str) -> ComfyNodeClient:
        node = self._nodes.get(url.rstrip("/"))
        return node.client if node is not None else ComfyNodeClient(url, http_timeout=self.config.http_timeout)

    def view(self, url: str) -> NodeView:
        with self._cond:
            return self._view(self._nodes[url.rstrip("/")], time.monotonic())

    def views(self) -> list[NodeView]:
        now = time.monotonic()
        with self._cond:
            return [self._view(node, now) for node in self._nodes.values()]

    @staticmethod
    def _view(node: NodeState, now: float) -> NodeView:
        return NodeView(
            url=node.url,
            up=node.is_up(),
            down_for=max(0.0, node.down_until - now) if node.down_until is not None else 0.0,
            busy_for=max(0.0, node.busy_until - now),
            failures=node.failures,
            last_error=node.last_error,
            inflight=node.inflight,
            foreign_queue=node.foreign_queue,
            last_workflow=node.last_workflow,
            preflight={name: list(problems) for name, problems in node.preflight.items()},
            abandoned=tuple(sorted(node.abandoned)),
        )

    # --- what the pool learned -------------------------------------------------------
    def mark_down(self, url: str, reason: str) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
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

    def mark_busy(self, url: str, retry_after: float | None, reason: str) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
        wait = self.config.node_backoff_seconds if retry_after is None else retry_after
        # At least a poll interval, so "Retry-After: 0" does not turn into a tight loop of refusals.
        wait = max(self.config.poll_seconds, min(wait, self.config.node_backoff_max_seconds))
        with self._cond:
            node.busy_until = max(node.busy_until, time.monotonic() + wait)
            node.last_error = reason
            self._cond.notify_all()
        logger.info("ComfyUI node %s is busy for %.1fs: %s", node.url, wait, reason)

    def mark_answering(self, url: str) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
        if node.abandoned and not self._stop_abandoned(node):
            return
        self._mark_up(node)

    def note_queue(self, url: str, queue_length: int) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
        with self._cond:
            node.foreign_queue = max(0, queue_length - node.inflight)

    def abandon(self, url: str, prompt_id: str) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
        with self._cond:
            node.abandoned.add(prompt_id)
        logger.warning(
            "Prompt %s on %s could not be confirmed stopped; it is stopped when the node answers", prompt_id, url
        )

    def _mark_up(self, node: NodeState) -> None:
        with self._cond:
            if node.down_until is not None:
                logger.info("ComfyUI node %s is back", node.url)
            node.down_until = None
            node.failures = 0
            node.last_error = ""
            node.probing = False
            self._cond.notify_all()

    def _stop_abandoned(self, node: NodeState) -> bool:
        """Delete and interrupt the prompts we left on a node that answers again; False if it failed."""
        with self._cond:
            prompt_ids = sorted(node.abandoned)
        for prompt_id in prompt_ids:
            errors = node.client.stop_prompt(prompt_id)
            if errors:
                with self._cond:
                    node.probing = False
                self.mark_down(node.url, errors[0].reason)
                return False
            with self._cond:
                node.abandoned.discard(prompt_id)
        logger.info("Stopped abandoned prompts %s on %s", ", ".join(prompt_ids), node.url)
        return True

    def _probe_due_nodes(self) -> None:
        """Probe, outside the lock, each down node whose backoff has run out (one thread per node)."""
        now = time.monotonic()
        due: list[NodeState] = []
        with self._cond:
            for node in self._nodes.values():
                if node.down_until is not None and node.down_until <= now and not node.probing:
                    node.probing = True
                    due.append(node)
        for node in due:
            try:
                node.client.system_stats(timeout=PROBE_TIMEOUT_SECONDS)
            except NodeError as exc:
                with self._cond:
                    node.probing = False
                self.mark_down(node.url, exc.reason)
                continue
            # Before it takes new work, nothing of ours may still be queued there.
            if node.abandoned and not self._stop_abandoned(node):
                continue
            self._mark_up(node)

    # --- slots -------------------------------------------------------------------------
    def _choose(
        self, workflow: str, up: list[NodeState], avoid: set[str], waited: float, now: float
    ) -> NodeState | None:
        free = [node for node in up if node.inflight < self.config.prompts_per_node and node.busy_until <= now]
        if not free:
            return None
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

    def acquire(
        self,
        workflow: str,
        *,
        exclude: Iterable[str] = (),
        avoid: Iterable[str] = (),
        deadline: float | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> Slot:
        """Down nodes are skipped (and probed again once their backoff runs out), busy ones waited for;
        among the rest, a node that last ran the same workflow wins, then the least queued work."""
        excluded = set(exclude)
        avoided = set(avoid)
        started = time.monotonic()
        if deadline is None:
            deadline = started + self.config.slot_wait_seconds
        while True:
            self._probe_due_nodes()
            with self._cond:
                usable = [node for node in self._nodes.values() if node.url not in excluded]
                if not usable:
                    raise NoNodeAvailable("excluded")
                up = [node for node in usable if node.is_up()]
                if not up:
                    raise NoNodeAvailable("down")
                now = time.monotonic()
                chosen = self._choose(workflow, up, avoided, now - started, now)
                if chosen is not None:
                    chosen.inflight += 1
                    chosen.last_workflow = workflow
                    return Slot(chosen.url, chosen.client)
                remaining = deadline - now
                if remaining <= 0:
                    raise NoNodeAvailable("busy")
                self._cond.wait(timeout=min(remaining, _TICK_SECONDS))
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled while it waited for a free node.")

    def release(self, slot: Slot) -> None:
        node = self._nodes.get(slot.url)
        if node is None:
            return
        with self._cond:
            node.inflight = max(0, node.inflight - 1)
            self._cond.notify_all()

    # --- preflight ------------------------------------------------------------------------
    def _object_info(self, node: NodeState, *, refresh: bool = False) -> dict[str, Any]:
        info = node.object_info
        if info is None or refresh:
            info = node.client.object_info()
            with self._cond:
                node.object_info = info
        return info

    def preflight(self, url: str, workflow: str, graph: Mapping[str, Any]) -> list[str]:
        node = self._nodes[url.rstrip("/")]
        cached = node.object_info is not None
        problems = check_graph(graph, self._object_info(node))
        if problems and cached:
            problems = check_graph(graph, self._object_info(node, refresh=True))
        with self._cond:
            node.preflight[workflow] = problems
        return problems
