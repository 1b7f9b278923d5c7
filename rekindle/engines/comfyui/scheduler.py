"""Node scheduling for the ComfyUI pool: which nodes are up, busy or down, who holds their slots, what they can run.

``NodeScheduler`` is the seam: the pool asks it for a slot on the best node for a workflow,
hands the slot back, and tells it what it learned about a node (down, busy, its queue
length, a prompt it could not stop there). ``LocalNodeScheduler`` keeps all of that in
this process, shared by its threads: processes do not coordinate, except through the
queue length each node reports. ``fleet.RedisNodeScheduler`` implements the same protocol
with the state in Redis, shared by every worker process (slots as leases, the loaded
workflow per node, up/down with one prober, ``/object_info`` cached once per node).

Both rank nodes the same way (``rank_nodes``) and serve waiting runs in priority order
(``PRIORITIES``: paid HD first, then interactive work, then bulk), arrival order within a
priority, with ``reserved_paid_slots`` of the fleet's free slots kept for paid runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rekindle.engines.base import CancelCheck, EngineCanceled
from rekindle.engines.comfyui.client import ComfyNodeClient, NodeError
from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.preflight import check_graph

logger = logging.getLogger(__name__)

# How often a waiting acquire looks at should_cancel() and the clock.
_TICK_SECONDS = 0.25
# Probes outside a pool's own config (health checks of the admin and cron).
PROBE_TIMEOUT_SECONDS = 3.0

NoNodeReason = Literal["excluded", "down", "busy"]

# Who is served first when runs wait for a slot: lower first.
PRIORITIES = {"paid": 0, "interactive": 1, "bulk": 2}
Priority = Literal["paid", "interactive", "bulk"]


def priority_rank(priority: str) -> int:
    return PRIORITIES.get(priority, PRIORITIES["interactive"])


@dataclass(frozen=True)
class NodeSnapshot:
    """What the choice of a node reads about one node."""

    url: str
    up: bool
    draining: bool
    busy_until: float
    # Our prompts on the node (this process's, or the fleet's with a shared scheduler).
    ours: int
    # Other prompts on the node, as last read from its /queue.
    foreign: int
    last_workflow: str

    @property
    def load(self) -> int:
        return self.ours + self.foreign


# A run leaves a free node whose loaded workflow other runs wait for to them for this many affinity waits.
LEAVE_TO_WAITERS_FOR = 3


def rank_nodes(
    workflow: str,
    nodes: Iterable[NodeSnapshot],
    *,
    limit: int,
    avoid: Iterable[str],
    waited: float,
    affinity_wait: float,
    now: float,
    wanted: Mapping[str, int] | None = None,
) -> list[str] | None:
    """The free nodes for ``workflow``, best first; None to wait for a busy node with its models loaded.

    Best is a node that has the workflow loaded and nothing else queued, then a node with
    nothing loaded yet, then the least queued work (ours and foreign, as its live /queue
    says): a loaded node with foreign prompts queued loses to an idle one, since waiting
    behind them costs more than a model switch. Nodes in ``avoid`` (they lost this run
    before) come only after every other free node.

    ``wanted`` counts the other runs waiting for a slot, by workflow: a free node with
    another workflow loaded that such a run waits for is left to it (a switch there costs
    two model loads, the one now and the one its run then needs elsewhere), for up to
    ``LEAVE_TO_WAITERS_FOR`` affinity waits; past that the run takes it like any other.
    Paid runs pass none.
    """
    nodes = list(nodes)
    usable = [node for node in nodes if node.up and not node.draining]
    free = [node for node in usable if node.ours < limit and node.busy_until <= now]
    avoided = set(avoid)
    candidates = [node for node in free if node.url not in avoided]
    warm = sorted((n for n in candidates if n.last_workflow == workflow and n.foreign == 0), key=lambda n: n.load)
    fresh = sorted((n for n in candidates if n.last_workflow == "" and n.foreign == 0), key=lambda n: n.load)
    if candidates and not warm and not fresh:
        busy_warm = [n for n in usable if n.last_workflow == workflow and n.url not in avoided]
        if busy_warm and waited < affinity_wait:
            # A node with these models loaded will free up soon; a switch costs a model load.
            return None
    chosen = {n.url for n in warm + fresh}
    rest = sorted((n for n in candidates if n.url not in chosen), key=lambda n: (n.load, n.last_workflow != workflow))
    if wanted and waited < affinity_wait * LEAVE_TO_WAITERS_FOR:
        left = {n.url for n in rest if n.last_workflow not in ("", workflow) and wanted.get(n.last_workflow, 0) > 0}
        if left:
            rest = [n for n in rest if n.url not in left]
            if not warm and not fresh and not rest:
                return None
    last = sorted((n for n in free if n.url in avoided), key=lambda n: n.load)
    return [n.url for n in warm + fresh + rest + last]


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
    # Takes no new prompts (staff drain it for maintenance or scale-in).
    draining: bool = False
    # The node's own queue (ours and foreign), as last read, and how many seconds ago.
    queue_length: int = 0
    queue_age: float | None = None

    @property
    def state(self) -> str:
        """``up``, ``down``, ``draining`` (still running ours) or ``drained`` (nothing of ours left)."""
        if self.draining:
            return "draining" if self.inflight else "drained"
        return "up" if self.up else "down"


class NodeScheduler(Protocol):
    """Chooses nodes and keeps what is known about them. Every method is safe to call from any thread."""

    urls: tuple[str, ...]

    def client(self, url: str) -> ComfyNodeClient:
        """The client for ``url`` (one of ``urls``, or any node URL for a one-off call such as a cancel)."""
        ...

    @property
    def backend(self) -> str:
        """Where the state lives now: ``local``, ``redis``, or the local fallback while Redis is away."""
        ...

    def acquire(
        self,
        workflow: str,
        *,
        priority: str = "interactive",
        exclude: Iterable[str] = (),
        avoid: Iterable[str] = (),
        deadline: float | None = None,
        should_cancel: CancelCheck | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> Slot:
        """A slot on the best node for ``workflow``, waiting for one until ``deadline`` (monotonic seconds).

        ``priority``: ``paid``, ``interactive`` or ``bulk`` (``PRIORITIES``); waiting runs are
        served in that order. ``exclude``: nodes that cannot run it at all. ``avoid``: nodes
        to use only if no other is free (they lost this run before). Raises
        ``NoNodeAvailable`` (``down`` at once when no node is up), or ``EngineCanceled``
        when ``should_cancel`` says so while waiting. ``on_wait`` is called once, when the
        run cannot have a slot at once.
        """
        ...

    def set_draining(self, url: str, draining: bool) -> None:
        """A draining node takes no new prompts; the ones it has run to their end."""
        ...

    def estimate_wait(self, workflow: str, priority: str) -> tuple[float, str]:
        """Seconds a run asking now would wait for a slot, and how that was reckoned (for the attempt's record)."""
        ...

    def service_seconds(self, workflow: str) -> float:
        """The measured seconds a run of ``workflow`` holds its slot (a default before any was measured)."""
        ...

    def note_service(self, workflow: str, seconds: float) -> None:
        """A prompt of ``workflow`` held its slot ``seconds`` (measured service times feed ``estimate_wait``)."""
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
        self.draining = False
        self.queue_length = 0
        self.queue_at: float | None = None

    def is_up(self) -> bool:
        return self.down_until is None

    @property
    def work(self) -> int:
        return self.inflight + self.foreign_queue


class ServiceTimes:
    """Measured seconds a prompt holds its slot, per workflow (an exponential moving average)."""

    WEIGHT = 0.2
    # Before anything is measured: a guess that errs long, so the first burst can overflow.
    DEFAULT_SECONDS = 30.0

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def note(self, workflow: str, seconds: float) -> None:
        with self._lock:
            known = self._seconds.get(workflow)
            self._seconds[workflow] = seconds if known is None else known + self.WEIGHT * (seconds - known)

    def mean(self, workflow: str) -> float:
        with self._lock:
            if workflow in self._seconds:
                return self._seconds[workflow]
            values = list(self._seconds.values())
        return sum(values) / len(values) if values else self.DEFAULT_SECONDS


def reserved_slots(configured: int, total_up_slots: int) -> int:
    """Slots kept for paid runs: as configured, but never more than a quarter of the slots up (none below 4)."""
    return min(configured, total_up_slots // 4)


def wait_estimate(*, ahead: int, free: int, slots: int, service_seconds: float) -> float:
    """Seconds until a slot frees for a run with ``ahead`` runs before it: whole service times of the
    fleet's slots, one round per ``slots`` runs that do not fit in the ``free`` slots."""
    if slots <= 0:
        return float("inf")
    waiting = ahead + 1 - free
    if waiting <= 0:
        return 0.0
    rounds = -(-waiting // slots)
    return rounds * service_seconds


class LocalNodeScheduler:
    """The in-process scheduler: node state in memory, shared by this process's threads.

    Down nodes are probed (``GET /system_stats``) by whichever thread next asks for a slot
    once their backoff has run out, one probe per node at a time. With
    ``queue_fresh_seconds`` above 0 the choice reads each node's live ``/queue`` when the
    last reading is older than that; 0 trusts the queue lengths our own runs report.
    """

    backend = "local"

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.urls = tuple(url.rstrip("/") for url in config.urls)
        self._nodes = {url: NodeState(url, ComfyNodeClient(url, http_timeout=config.http_timeout)) for url in self.urls}
        self._cond = threading.Condition()
        # Runs waiting for a slot: (priority rank, arrival number) -> ready to take one now.
        self._waiters: dict[tuple[int, int], bool] = {}
        # The workflow each waiting run waits to run (``rank_nodes``'s ``wanted``).
        self._waiting_for: dict[tuple[int, int], str] = {}
        self._arrivals = 0
        self.service = ServiceTimes()

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
            draining=node.draining,
            queue_length=node.queue_length,
            queue_age=None if node.queue_at is None else max(0.0, now - node.queue_at),
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
            if not any(other.is_up() for other in self._nodes.values() if other is not node):
                # The whole fleet is out: runs are waiting for it, so look again at the base interval.
                delay = min(delay, self.config.node_backoff_seconds)
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
            node.queue_length = queue_length
            node.queue_at = time.monotonic()
            node.foreign_queue = max(0, queue_length - node.inflight)

    def set_draining(self, url: str, draining: bool) -> None:
        node = self._nodes.get(url.rstrip("/"))
        if node is None:
            return
        with self._cond:
            node.draining = draining
            self._cond.notify_all()
        logger.info("ComfyUI node %s %s", node.url, "draining" if draining else "takes work again")

    def note_service(self, workflow: str, seconds: float) -> None:
        self.service.note(workflow, seconds)

    def service_seconds(self, workflow: str) -> float:
        return self.service.mean(workflow)

    def estimate_wait(self, workflow: str, priority: str) -> tuple[float, str]:
        rank = priority_rank(priority)
        now = time.monotonic()
        with self._cond:
            up = [n for n in self._nodes.values() if n.is_up() and not n.draining]
            slots = len(up) * self.config.prompts_per_node
            free = sum(max(0, self.config.prompts_per_node - n.inflight) for n in up if n.busy_until <= now)
            ahead = sum(1 for (r, _), ready in self._waiters.items() if r <= rank)
        service = self.service.mean(workflow)
        wait = wait_estimate(ahead=ahead, free=free, slots=slots, service_seconds=service)
        return wait, f"{ahead} run(s) waiting ahead, {free} of {slots} slot(s) free, {service:.0f}s per run"

    def _refresh_queues(self, excluded: set[str]) -> None:
        """Read the live /queue of each up node whose last reading is stale (outside the lock)."""
        fresh = self.config.queue_fresh_seconds
        if fresh <= 0:
            return
        now = time.monotonic()
        with self._cond:
            stale = [
                n
                for n in self._nodes.values()
                if n.url not in excluded
                and n.is_up()
                and not n.draining
                and (n.queue_at is None or now - n.queue_at >= fresh)
            ]
            for node in stale:
                node.queue_at = now  # one reader at a time
        for node in stale:
            try:
                queue = node.client.queue(timeout=self.config.probe_timeout)
            except NodeError as exc:
                # A slow answer is no verdict (a heavy node can hold the HTTP loop): the runs' own polls decide.
                if not getattr(exc, "timed_out", False):
                    self._learned(node.url, exc)
                continue
            self.note_queue(node.url, len(queue))

    def _learned(self, url: str, exc: NodeError) -> None:
        from rekindle.engines.comfyui.client import NodeBusy, NodeDown

        if isinstance(exc, NodeBusy):
            self.mark_busy(url, exc.retry_after, exc.reason)
        elif isinstance(exc, NodeDown):
            self.mark_down(url, exc.reason)

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
                node.client.system_stats(timeout=self.config.probe_timeout)
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
    def _snapshot(self, node: NodeState) -> NodeSnapshot:
        return NodeSnapshot(
            url=node.url,
            up=node.is_up(),
            draining=node.draining,
            busy_until=node.busy_until,
            ours=node.inflight,
            foreign=node.foreign_queue,
            last_workflow=node.last_workflow,
        )

    def _free_slots(self, nodes: Iterable[NodeState], now: float) -> int:
        return sum(
            max(0, self.config.prompts_per_node - n.inflight)
            for n in nodes
            if n.is_up() and not n.draining and n.busy_until <= now
        )

    def _my_turn(self, me: tuple[int, int], free: int, total_up_slots: int) -> bool:
        """Whether the runs waiting before ``me`` (and ready to take a slot) leave one for it."""
        reserved = reserved_slots(self.config.reserved_paid_slots, total_up_slots)
        ahead = sum(1 for key, ready in self._waiters.items() if ready and key < me)
        usable = free if me[0] == PRIORITIES["paid"] else free - reserved
        return ahead < usable

    def acquire(
        self,
        workflow: str,
        *,
        priority: str = "interactive",
        exclude: Iterable[str] = (),
        avoid: Iterable[str] = (),
        deadline: float | None = None,
        should_cancel: CancelCheck | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> Slot:
        """Down nodes are skipped (and probed again once their backoff runs out), busy ones waited for;
        the order among the free ones is ``rank_nodes``'s."""
        excluded = set(exclude)
        avoided = set(avoid)
        started = time.monotonic()
        if deadline is None:
            deadline = started + self.config.slot_wait_seconds
        with self._cond:
            self._arrivals += 1
            me = (priority_rank(priority), self._arrivals)
            self._waiters[me] = False
            self._waiting_for[me] = workflow
        try:
            while True:
                self._probe_due_nodes()
                self._refresh_queues(excluded)
                with self._cond:
                    usable = [node for node in self._nodes.values() if node.url not in excluded]
                    if not usable:
                        raise NoNodeAvailable("excluded")
                    up = [node for node in usable if node.is_up()]
                    if not up:
                        raise NoNodeAvailable("down")
                    now = time.monotonic()
                    ranked = rank_nodes(
                        workflow,
                        (self._snapshot(node) for node in up),
                        limit=self.config.prompts_per_node,
                        avoid=avoided,
                        waited=now - started,
                        affinity_wait=self.config.affinity_wait_seconds,
                        now=now,
                        wanted=None if me[0] == PRIORITIES["paid"] else self._wanted(me),
                    )
                    # A run that defers (for a node with its models loaded) lets the ones behind it pass.
                    self._waiters[me] = ranked is not None
                    total = sum(self.config.prompts_per_node for n in self._nodes.values() if n.is_up())
                    if ranked and self._my_turn(me, self._free_slots(self._nodes.values(), now), total):
                        chosen = self._nodes[ranked[0]]
                        chosen.inflight += 1
                        chosen.last_workflow = workflow
                        return Slot(chosen.url, chosen.client)
                    remaining = deadline - now
                    if remaining <= 0:
                        raise NoNodeAvailable("busy")
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                with self._cond:
                    self._cond.wait(timeout=min(remaining, _TICK_SECONDS))
                if should_cancel is not None and should_cancel():
                    raise EngineCanceled("canceled", "The run was canceled while it waited for a free node.")
        finally:
            with self._cond:
                self._waiters.pop(me, None)
                self._waiting_for.pop(me, None)
                self._cond.notify_all()

    def _wanted(self, me: tuple[int, int]) -> dict[str, int]:
        """How many other runs of this process wait for a slot, by workflow (call with ``_cond`` held)."""
        return dict(Counter(workflow for key, workflow in self._waiting_for.items() if key != me))

    def hold(self, url: str) -> None:
        """Count a slot this process holds from elsewhere (the fleet's shared state), to be given back with
        ``release``: the nodes' limits then hold for what this process runs without that state too."""
        node = self._nodes[url.rstrip("/")]
        with self._cond:
            node.inflight += 1

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
