"""The fleet's node state in Redis, shared by every worker process: ``RedisNodeScheduler``.

What lives in Redis, under ``{FLEET_NAMESPACE}:fleet:``:

- ``slots:{url}``: a sorted set of slot tokens scored by lease expiry (ms, Redis's clock).
  A slot is taken by one Lua script that drops expired leases, counts the free slots of
  the fleet, checks the caller's turn among the waiting runs, adds the token and notes the
  workflow as the node's loaded one, so no
  node ever holds more of our prompts than ``COMFYUI_PROMPTS_PER_NODE``. Holders renew
  their leases every third of ``FLEET_SLOT_LEASE_SECONDS`` from a thread; a worker that
  dies frees its slots when they run out.
- ``waiters`` / ``waiters_lease``: the runs waiting for a slot (``{workflow}#{id}``), scored by priority then
  arrival; a run takes a slot only when fewer runs wait before it than there are free
  slots (``reserved_paid_slots`` of them kept for paid runs). A run that defers for a node
  with its models loaded, or leaves a free node to a waiting run whose models are loaded
  there, steps out of the line meanwhile; a waiter that died drops out when its lease runs out.
- ``node:{url}``: a hash with the workflow last sent there, up/down (``down_until``,
  ``failures``, ``last_error``), ``busy_until``, ``draining``, the node's live queue length
  and when it was read, and the preflight results.
- ``objinfo:{url}``: the node's ``/object_info``, compressed, read once for the fleet
  (each process keeps the parsed copy while the stamp in ``node:{url}`` is unchanged).
- ``probe:{url}`` and ``queue-read:{url}``: short locks, so one process probes a down node
  and one reads a node's ``/queue`` per ``COMFYUI_QUEUE_FRESH_SECONDS``, not every process.
- ``abandoned:{url}``: our prompts a run could not confirm stopped there; whoever sees the
  node answer again stops them before it takes new work.
- ``service``: measured seconds per workflow, for the wait estimate behind overflow.
- ``released``: a pub/sub channel; a release wakes the waiting runs of every process.

Redis down: every call falls back to the ``LocalNodeScheduler`` this one keeps in step
(it is told everything the fleet is told), logged as ``fleet.redis_lost`` and counted in
the metrics; a run in progress keeps its slot (the local state counts it from then on)
and finishes. Every couple of seconds a ping tries Redis again; when it answers, the slots
this process holds (taken from Redis or locally meanwhile) are written back, so the fleet's
count is true again at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from rekindle.engines.base import CancelCheck, EngineCanceled
from rekindle.engines.comfyui import metrics
from rekindle.engines.comfyui.client import ComfyNodeClient, NodeBusy, NodeDown, NodeError
from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.preflight import check_graph
from rekindle.engines.comfyui.scheduler import (
    PRIORITIES,
    LocalNodeScheduler,
    NodeSnapshot,
    NodeView,
    NoNodeAvailable,
    ServiceTimes,
    Slot,
    priority_rank,
    rank_nodes,
    reserved_slots,
    wait_estimate,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a waiting run sleeps when no release wakes it.
_TICK_SECONDS = 0.25
# A waiting run that stops renewing its place (its process died) drops out after this.
_WAITER_LEASE_MS = 10_000
# How often a process without Redis tries it again.
_REDIS_RETRY_SECONDS = 2.0
# How often the maintenance thread looks for due probes and stale queue readings.
_MAINTENANCE_SECONDS = 0.25
_OBJECT_INFO_TTL_SECONDS = 3600
# The threads of one process waiting at once share one read of the nodes this young (the slot itself
# is taken atomically by the script, so a slightly old view only costs a retry).
_SNAPSHOT_SECONDS = 0.05
# Each node's ``down_until``, ``queue_at`` and ``draining``, as the maintenance thread reads them.
_MaintenanceStates = dict[str, tuple[str | None, str | None, str | None]]
# Between a waiting run's workflow and the rest of its id in ``waiters``.
_WAITER_SEP = "#"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local ready = ARGV[7] == '1'
if ready then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[10]), ARGV[1])
if not ready then return -1 end
local limit = tonumber(ARGV[4])
local nodes = (#KEYS - 2) / 2
local free = 0
for i = 3, 2 + nodes do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  if held < limit then free = free + (limit - held) end
end
local ahead = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[2])
local usable = free
if ARGV[6] ~= '1' then usable = free - tonumber(ARGV[5]) end
if ahead >= usable then return -2 end
local count = tonumber(ARGV[9])
for j = 1, count do
  local index = tonumber(ARGV[10 + j])
  local key = KEYS[2 + index]
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[8])
    redis.call('HSET', KEYS[2 + nodes + index], 'last_workflow', ARGV[11 + count])
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
    return index
  end
end
return -3
"""

_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + tonumber(ARGV[1]), ARGV[i + 1])
end
return #KEYS
"""


@dataclass
class _Held:
    slot: Slot
    # Counted in the local scheduler (taken there while Redis was away, or held when it went away).
    local: bool


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class RedisNodeScheduler:
    """``NodeScheduler`` over Redis: one view of the nodes for every worker process (see the module doc)."""

    def __init__(self, config: PoolConfig, client: redis.Redis | None = None) -> None:
        self.config = config
        self.urls = tuple(url.rstrip("/") for url in config.urls)
        self.local = LocalNodeScheduler(config)
        self.redis = client or redis.Redis.from_url(
            config.redis_url, socket_timeout=1.0, socket_connect_timeout=0.5, decode_responses=True
        )
        self.prefix = f"{config.fleet_namespace}:fleet:"
        self._acquire_script = self.redis.register_script(_ACQUIRE)
        self._renew_script = self.redis.register_script(_RENEW)
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.RLock()
        self._cond = threading.Condition()
        self._fallback_since: float | None = None
        self._next_redis_try = 0.0
        self._info_cache: dict[str, tuple[str, dict[str, Any]]] = {}
        self._service = ServiceTimes()
        self._last_up: dict[str, bool] = {}
        self._snapshot_cache: tuple[float, list[NodeSnapshot], list[str]] | None = None
        self._snapshot_lock = threading.Lock()
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._maintain, name="fleet-maintenance", daemon=True),
            threading.Thread(target=self._listen, name="fleet-wakeups", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        metrics.FLEET_BACKEND.labels(backend="redis").set(1)
        metrics.FLEET_BACKEND.labels(backend="local").set(0)

    # --- keys ------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _node_key(self, url: str) -> str:
        return self._key("node", url)

    def _slots_key(self, url: str) -> str:
        return self._key("slots", url)

    @property
    def backend(self) -> str:
        return "redis" if self._fallback_since is None else "local (Redis unreachable)"

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            thread.join(timeout=3)
        self.redis.close()

    # --- Redis, or the local state when it is gone ----------------------------------------
    def _try(self, operation: Callable[[], T], fallback: Callable[[], T]) -> T:
        if self._fallback_since is not None:
            return fallback()
        try:
            return operation()
        except redis.RedisError as exc:
            self._lose_redis(exc)
            return fallback()

    def _lose_redis(self, exc: Exception) -> None:
        with self._cond:
            if self._fallback_since is not None:
                return
            self._fallback_since = time.monotonic()
            self._next_redis_try = self._fallback_since + _REDIS_RETRY_SECONDS
        with self._held_lock:
            # The slots this process took from Redis still run: the local state counts them from now on.
            for held in self._held.values():
                if not held.local:
                    self.local.hold(held.slot.url)
                    held.local = True
        metrics.FLEET_REDIS_LOST.inc()
        metrics.FLEET_BACKEND.labels(backend="redis").set(0)
        metrics.FLEET_BACKEND.labels(backend="local").set(1)
        logger.warning(
            "fleet.redis_lost: node slots and state fall back to this process until Redis answers again: %s",
            exc,
            extra={"event": "fleet.redis_lost"},
        )

    def _try_redis_again(self) -> None:
        if self._fallback_since is None or time.monotonic() < self._next_redis_try:
            return
        self._next_redis_try = time.monotonic() + _REDIS_RETRY_SECONDS
        try:
            self.redis.ping()
            # The slots this process holds are true whatever Redis forgot meanwhile: write them back first.
            with self._held_lock:
                self._renew_all()
        except redis.RedisError:
            return
        lost_for = time.monotonic() - self._fallback_since
        with self._cond:
            self._fallback_since = None
            self._cond.notify_all()
        metrics.FLEET_BACKEND.labels(backend="redis").set(1)
        metrics.FLEET_BACKEND.labels(backend="local").set(0)
        logger.warning(
            "fleet.redis_back: node state is shared again after %.1fs", lost_for, extra={"event": "fleet.redis_back"}
        )

    # --- background: leases, probes, live queues, wake-ups --------------------------------
    def _renew_all(self) -> None:
        """Write every held slot's lease (creating it again if Redis lost it). Called under ``_held_lock``."""
        if not self._held:
            return
        tokens = list(self._held.items())
        self._renew_script(
            keys=[self._slots_key(held.slot.url) for _, held in tokens],
            args=[int(self.config.slot_lease_seconds * 1000)] + [token for token, _ in tokens],
        )

    def _maintain(self) -> None:
        next_renewal = 0.0
        while not self._closed.wait(_MAINTENANCE_SECONDS):
            try:
                if self._fallback_since is not None:
                    self._try_redis_again()
                    continue
                now = time.monotonic()
                if now >= next_renewal:
                    with self._held_lock:
                        self._renew_all()
                    next_renewal = now + self.config.slot_lease_seconds / 3.0
                states = self._maintenance_states()
                self._probe_due_nodes(states)
                self._refresh_queues(states)
            except redis.RedisError as exc:
                self._lose_redis(exc)
            except Exception:  # the thread must outlive any one bad answer
                logger.exception("fleet maintenance failed")

    def _listen(self) -> None:
        channel = self._key("released")
        while not self._closed.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(channel)
                while not self._closed.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        with self._cond:
                            self._cond.notify_all()
            except (redis.RedisError, OSError, ValueError):
                self._closed.wait(_REDIS_RETRY_SECONDS)

    def _lock(self, name: str, url: str, seconds: float) -> bool:
        return bool(self.redis.set(self._key(name, url), "1", nx=True, px=max(1, int(seconds * 1000))))

    def _maintenance_states(self) -> _MaintenanceStates:
        """Each node's ``down_until``, ``queue_at`` and ``draining``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for url in self.urls:
            pipe.hmget(self._node_key(url), "down_until", "queue_at", "draining")
        return {url: tuple(state) for url, state in zip(self.urls, pipe.execute(), strict=True)}

    def _probe_due_nodes(self, states: _MaintenanceStates) -> None:
        now = time.time()
        for url in self.urls:
            down_until = states[url][0]
            if down_until is None or _float(down_until) > now:
                continue
            if not self._lock("probe", url, self.config.probe_timeout + 1.0):
                continue  # another process probes it
            client = self.client(url)
            try:
                client.system_stats(timeout=self.config.probe_timeout)
            except NodeError as exc:
                self.mark_down(url, exc.reason)
                continue
            self.mark_answering(url)

    def _refresh_queues(self, states: _MaintenanceStates) -> None:
        fresh = self.config.queue_fresh_seconds
        if fresh <= 0:
            return
        now = time.time()
        for url, (down_until, queue_at, draining) in states.items():
            if down_until is not None or draining:
                continue
            if queue_at is not None and now - _float(queue_at) < fresh:
                continue
            if not self._lock("queue-read", url, fresh):
                continue
            try:
                queue = self.client(url).queue(timeout=self.config.probe_timeout)
            except NodeBusy as exc:
                self.mark_busy(url, exc.retry_after, exc.reason)
                continue
            except NodeDown as exc:
                # A slow answer is no verdict (a heavy node can hold the HTTP loop): the runs' own polls decide.
                if not exc.timed_out:
                    self.mark_down(url, exc.reason)
                continue
            except NodeError:
                continue
            self.note_queue(url, len(queue))

    # --- reading -------------------------------------------------------------------
    def client(self, url: str) -> ComfyNodeClient:
        return self.local.client(url)

    def _read_nodes(self, waiters: list[str] | None = None) -> list[tuple[str, dict[str, str], int]]:
        """Each node's hash and the live leases on its slots, in one round trip; with a ``waiters`` list,
        the ids of the runs waiting for a slot in the fleet are added to it in the same trip."""
        now_ms = int(time.time() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for url in self.urls:
            pipe.hgetall(self._node_key(url))
            pipe.zcount(self._slots_key(url), now_ms, "+inf")
        if waiters is not None:
            pipe.zrangebyscore(self._key("waiters_lease"), now_ms, "+inf")
        answers = pipe.execute()
        if waiters is not None:
            waiters.extend(answers.pop())
        return [(url, answers[2 * i], int(answers[2 * i + 1])) for i, url in enumerate(self.urls)]

    def _snapshots(self) -> list[NodeSnapshot]:
        return self._fleet_view()[0]

    def _fleet_view(self) -> tuple[list[NodeSnapshot], list[str]]:
        """The nodes' snapshots and the fleet's waiting runs (their ids), read at most every ``_SNAPSHOT_SECONDS``."""
        with self._snapshot_lock:
            cached = self._snapshot_cache
            if cached is not None and time.monotonic() - cached[0] < _SNAPSHOT_SECONDS:
                return cached[1], cached[2]
            waiters: list[str] = []
            snapshots = self._read_snapshots(waiters)
            self._snapshot_cache = (time.monotonic(), snapshots, waiters)
            return snapshots, waiters

    def _forget_snapshot(self) -> None:
        with self._snapshot_lock:
            self._snapshot_cache = None

    def _read_snapshots(self, waiters: list[str] | None = None) -> list[NodeSnapshot]:
        now_wall, now = time.time(), time.monotonic()
        snapshots = []
        for url, state, held in self._read_nodes(waiters):
            queue_length = int(_float(state.get("queue_len")))
            busy_left = max(0.0, _float(state.get("busy_until")) - now_wall)
            snapshots.append(
                NodeSnapshot(
                    url=url,
                    up="down_until" not in state,
                    draining=bool(state.get("draining")),
                    busy_until=now + busy_left if busy_left else 0.0,
                    ours=held,
                    foreign=max(0, queue_length - held),
                    last_workflow=state.get("last_workflow", ""),
                )
            )
        self._last_up = {s.url: s.up for s in snapshots}
        for snapshot in snapshots:
            metrics.NODE_UP.labels(node=snapshot.url).set(1 if snapshot.up else 0)
            metrics.NODE_SLOTS_IN_USE.labels(node=snapshot.url).set(snapshot.ours)
        return snapshots

    def _view_of(self, url: str, state: Mapping[str, str], held: int) -> NodeView:
        now = time.time()
        down_until = state.get("down_until")
        preflight = {
            key.removeprefix("preflight:"): json.loads(value)
            for key, value in state.items()
            if key.startswith("preflight:")
        }
        queue_at = state.get("queue_at")
        queue_length = int(_float(state.get("queue_len")))
        return NodeView(
            url=url,
            up=down_until is None,
            down_for=max(0.0, _float(down_until) - now) if down_until is not None else 0.0,
            busy_for=max(0.0, _float(state.get("busy_until")) - now),
            failures=int(_float(state.get("failures"))),
            last_error=state.get("last_error", ""),
            inflight=held,
            foreign_queue=max(0, queue_length - held),
            last_workflow=state.get("last_workflow", ""),
            preflight=preflight,
            abandoned=tuple(sorted(self.redis.smembers(self._key("abandoned", url)))),  # type: ignore[arg-type]
            draining=bool(state.get("draining")),
            queue_length=queue_length,
            queue_age=None if queue_at is None else max(0.0, now - _float(queue_at)),
        )

    def views(self) -> list[NodeView]:
        return self._try(
            lambda: [self._view_of(url, state, held) for url, state, held in self._read_nodes()], self.local.views
        )

    def view(self, url: str) -> NodeView:
        url = url.rstrip("/")
        return next(view for view in self.views() if view.url == url)

    # --- what the pool learned -------------------------------------------------------
    def mark_down(self, url: str, reason: str) -> None:
        url = url.rstrip("/")
        self.local.mark_down(url, reason)

        def shared() -> None:
            key = self._node_key(url)
            now = time.time()
            down_until = self.redis.hget(key, "down_until")
            if down_until is not None and _float(down_until) > now:
                # Another process (or run) saw it first: one failure, not one per process.
                self.redis.hset(key, "last_error", reason)
                return
            failures = int(self.redis.hincrby(key, "failures", 1))
            delay = min(self.config.node_backoff_seconds * 2 ** (failures - 1), self.config.node_backoff_max_seconds)
            if not any(up for other, up in self._last_up.items() if other != url):
                delay = min(delay, self.config.node_backoff_seconds)
            pipe = self.redis.pipeline()
            pipe.hset(key, mapping={"down_until": now + delay, "last_error": reason})
            pipe.hdel(key, "objinfo_at")
            pipe.delete(self._key("objinfo", url))
            pipe.execute()
            self._last_up[url] = False
            self._forget_snapshot()
            metrics.NODE_UP.labels(node=url).set(0)

        self._try(shared, lambda: None)

    def mark_busy(self, url: str, retry_after: float | None, reason: str) -> None:
        url = url.rstrip("/")
        self.local.mark_busy(url, retry_after, reason)
        wait = self.config.node_backoff_seconds if retry_after is None else retry_after
        wait = max(self.config.poll_seconds, min(wait, self.config.node_backoff_max_seconds))
        self._try(
            lambda: self.redis.hset(
                self._node_key(url), mapping={"busy_until": time.time() + wait, "last_error": reason}
            ),
            lambda: 0,
        )

    def mark_answering(self, url: str) -> None:
        url = url.rstrip("/")

        def shared() -> None:
            key = self._key("abandoned", url)
            client = self.client(url)
            for prompt_id in sorted(self.redis.smembers(key)):
                errors = client.stop_prompt(str(prompt_id))
                if errors:
                    self.mark_down(url, errors[0].reason)
                    return
                self.redis.srem(key, prompt_id)
                logger.info("Stopped abandoned prompt %s on %s", prompt_id, url)
            node_key = self._node_key(url)
            if self.redis.hget(node_key, "down_until") is not None:
                logger.info("ComfyUI node %s is back", url)
            pipe = self.redis.pipeline()
            pipe.hdel(node_key, "down_until", "failures")
            pipe.hset(node_key, "last_error", "")
            pipe.execute()
            self._last_up[url] = True
            self._forget_snapshot()
            metrics.NODE_UP.labels(node=url).set(1)
            with self._cond:
                self._cond.notify_all()

        self._try(shared, lambda: self.local.mark_answering(url))

    def note_queue(self, url: str, queue_length: int) -> None:
        url = url.rstrip("/")
        self.local.note_queue(url, queue_length)
        metrics.NODE_QUEUE_LENGTH.labels(node=url).set(queue_length)
        self._try(
            lambda: self.redis.hset(self._node_key(url), mapping={"queue_len": queue_length, "queue_at": time.time()}),
            lambda: 0,
        )

    def abandon(self, url: str, prompt_id: str) -> None:
        url = url.rstrip("/")
        self.local.abandon(url, prompt_id)
        self._try(lambda: self.redis.sadd(self._key("abandoned", url), prompt_id), lambda: 0)

    def set_draining(self, url: str, draining: bool) -> None:
        url = url.rstrip("/")
        self.local.set_draining(url, draining)
        key = self._node_key(url)

        def shared() -> None:
            if draining:
                self.redis.hset(key, "draining", "1")
            else:
                self.redis.hdel(key, "draining")

        self._try(shared, lambda: None)
        self._forget_snapshot()
        metrics.NODE_DRAINING.labels(node=url).set(1 if draining else 0)

    def note_service(self, workflow: str, seconds: float) -> None:
        self._service.note(workflow, seconds)
        mean = self._service.mean(workflow)
        self._try(lambda: self.redis.hset(self._key("service"), workflow, mean), lambda: 0)

    def service_seconds(self, workflow: str) -> float:
        def shared() -> float:
            known = self.redis.hget(self._key("service"), workflow)
            return _float(known) if known is not None else self._service.mean(workflow)

        return self._try(shared, lambda: self._service.mean(workflow))

    def estimate_wait(self, workflow: str, priority: str) -> tuple[float, str]:
        def shared() -> tuple[float, str]:
            snapshots = self._snapshots()
            now = time.monotonic()
            limit = self.config.prompts_per_node
            usable = [s for s in snapshots if s.up and not s.draining]
            slots = len(usable) * limit
            free = sum(max(0, limit - s.ours) for s in usable if s.busy_until <= now)
            score = priority_rank(priority) * 1e13 + time.time() * 1000
            ahead = int(self.redis.zcount(self._key("waiters"), "-inf", f"({score}"))
            known = self.redis.hget(self._key("service"), workflow)
            service = _float(known) if known is not None else self._service.mean(workflow)
            wait = wait_estimate(ahead=ahead, free=free, slots=slots, service_seconds=service)
            return wait, f"{ahead} run(s) waiting ahead, {free} of {slots} slot(s) free, {service:.0f}s per run"

        return self._try(shared, lambda: self.local.estimate_wait(workflow, priority))

    # --- slots -------------------------------------------------------------------------
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
        excluded = set(exclude)
        avoided = set(avoid)
        started = time.monotonic()
        if deadline is None:
            deadline = started + self.config.slot_wait_seconds
        # The workflow is in the id, so the other runs waiting know what this one waits to run.
        waiter = f"{workflow}{_WAITER_SEP}{uuid.uuid4().hex}"
        score = priority_rank(priority) * 1e13 + time.time() * 1000
        paid = priority_rank(priority) == PRIORITIES["paid"]
        try:
            while True:
                if self._fallback_since is not None:
                    return self._acquire_locally(
                        workflow, priority, excluded, avoided, deadline, should_cancel, on_wait
                    )
                try:
                    slot = self._try_take(workflow, waiter, score, paid, excluded, avoided, started)
                except redis.RedisError as exc:
                    self._lose_redis(exc)
                    continue
                if slot is not None:
                    return slot
                now = time.monotonic()
                if now >= deadline:
                    raise NoNodeAvailable("busy")
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                with self._cond:
                    self._cond.wait(timeout=min(deadline - now, _TICK_SECONDS))
                if should_cancel is not None and should_cancel():
                    raise EngineCanceled("canceled", "The run was canceled while it waited for a free node.")
        finally:
            self._leave_queue(waiter)

    def _leave_queue(self, waiter: str) -> None:
        if self._fallback_since is not None:
            return
        try:
            pipe = self.redis.pipeline()
            pipe.zrem(self._key("waiters"), waiter)
            pipe.zrem(self._key("waiters_lease"), waiter)
            pipe.execute()
        except redis.RedisError:
            pass  # its lease runs out

    def _try_take(
        self,
        workflow: str,
        waiter: str,
        score: float,
        paid: bool,
        excluded: set[str],
        avoided: set[str],
        started: float,
    ) -> Slot | None:
        view, waiters = self._fleet_view()
        snapshots = [s for s in view if s.url not in excluded]
        if not snapshots:
            raise NoNodeAvailable("excluded")
        up = [s for s in snapshots if s.up]
        if not up:
            raise NoNodeAvailable("down")
        now = time.monotonic()
        ranked = rank_nodes(
            workflow,
            up,
            limit=self.config.prompts_per_node,
            avoid=avoided,
            waited=now - started,
            affinity_wait=self.config.affinity_wait_seconds,
            now=now,
            wanted=None if paid else Counter(w.partition(_WAITER_SEP)[0] for w in waiters if w != waiter),
        )
        # Every node that may take a prompt now counts towards the fleet's free slots.
        open_nodes = [s.url for s in self._last_snapshot_open(snapshots, now)]
        total_up = sum(self.config.prompts_per_node for s in snapshots if s.up and not s.draining)
        candidates = [open_nodes.index(url) + 1 for url in ranked or [] if url in open_nodes]
        token = f"{waiter}:{uuid.uuid4().hex[:8]}"
        with self._held_lock:
            index = int(
                self._acquire_script(
                    keys=[self._key("waiters"), self._key("waiters_lease")]
                    + [self._slots_key(url) for url in open_nodes]
                    + [self._node_key(url) for url in open_nodes],
                    args=[
                        waiter,
                        repr(score),
                        int(self.config.slot_lease_seconds * 1000),
                        self.config.prompts_per_node,
                        reserved_slots(self.config.reserved_paid_slots, total_up),
                        "1" if paid else "0",
                        # A run that defers (for a node with its models loaded) lets the ones behind it pass.
                        "0" if ranked is None else "1",
                        token,
                        len(candidates),
                        _WAITER_LEASE_MS,
                        *candidates,
                        workflow,
                    ],
                )
            )
            if index <= 0:
                return None
            url = open_nodes[index - 1]
            slot = Slot(url, self.client(url), token)
            self._held[token] = _Held(slot, local=False)
        self._forget_snapshot()
        return slot

    @staticmethod
    def _last_snapshot_open(snapshots: list[NodeSnapshot], now: float) -> list[NodeSnapshot]:
        return [s for s in snapshots if s.up and not s.draining and s.busy_until <= now]

    def _acquire_locally(
        self,
        workflow: str,
        priority: str,
        excluded: set[str],
        avoided: set[str],
        deadline: float,
        should_cancel: CancelCheck | None,
        on_wait: Callable[[], None] | None,
    ) -> Slot:
        slot = self.local.acquire(
            workflow,
            priority=priority,
            exclude=excluded,
            avoid=avoided,
            deadline=deadline,
            should_cancel=should_cancel,
            on_wait=on_wait,
        )
        token = f"local:{uuid.uuid4().hex}"
        held = Slot(slot.url, slot.client, token)
        with self._held_lock:
            self._held[token] = _Held(held, local=True)
        return held

    def release(self, slot: Slot) -> None:
        with self._held_lock:
            held = self._held.pop(slot.token, None)
            if held is not None and held.local:
                self.local.release(held.slot)
            if self._fallback_since is None:
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.zrem(self._slots_key(slot.url), slot.token)
                    pipe.publish(self._key("released"), slot.url)
                    pipe.execute()
                except redis.RedisError as exc:
                    self._lose_redis(exc)
        self._forget_snapshot()
        with self._cond:
            self._cond.notify_all()

    def held_slots(self) -> dict[str, int]:
        """This process's slots per node (for tests and the admin)."""
        with self._held_lock:
            counts: dict[str, int] = {}
            for held in self._held.values():
                counts[held.slot.url] = counts.get(held.slot.url, 0) + 1
            return counts

    def fleet_slots(self) -> dict[str, int]:
        """Live leases per node in Redis, every process's."""
        now_ms = int(time.time() * 1000)
        return {url: int(self.redis.zcount(self._slots_key(url), now_ms, "+inf")) for url in self.urls}

    # --- preflight ------------------------------------------------------------------------
    def _object_info(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        key = self._key("objinfo", url)
        node_key = self._node_key(url)
        if not refresh:
            stamp = self.redis.hget(node_key, "objinfo_at")
            cached = self._info_cache.get(url)
            if stamp is not None and cached is not None and cached[0] == stamp:
                return cached[1]
            if stamp is not None:
                raw = self.redis.get(key)
                if raw is not None:
                    info: dict[str, Any] = json.loads(zlib.decompress(bytes.fromhex(str(raw))))
                    self._info_cache[url] = (str(stamp), info)
                    return info
        info = self.client(url).object_info()
        stamp = repr(time.time())
        pipe = self.redis.pipeline()
        pipe.set(key, zlib.compress(json.dumps(info).encode()).hex(), ex=_OBJECT_INFO_TTL_SECONDS)
        pipe.hset(node_key, "objinfo_at", stamp)
        pipe.execute()
        self._info_cache[url] = (stamp, info)
        return info

    def preflight(self, url: str, workflow: str, graph: Mapping[str, Any]) -> list[str]:
        url = url.rstrip("/")

        def shared() -> list[str]:
            cached = self.redis.hget(self._node_key(url), "objinfo_at") is not None
            problems = check_graph(graph, self._object_info(url))
            if problems and cached:
                problems = check_graph(graph, self._object_info(url, refresh=True))
            self.redis.hset(self._node_key(url), f"preflight:{workflow}", json.dumps(problems))
            return problems

        return self._try(shared, lambda: self.local.preflight(url, workflow, graph))
