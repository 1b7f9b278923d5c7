"""Live progress of a job: each change announced after commit, and the event stream a page follows.

``GET /api/v1/jobs/{id}/events`` (``jobs.api.JobEventsView``) answers with Server-Sent Events built
here by :func:`job_event_stream`:

- ``job``: ``{"id", "selected_restore", "latest_animation"}``, first and whenever it changes;
- ``attempt``: ``{"kind", "id", "parent", "status", "progress", "error"}`` for every attempt of every
  kind (``parent`` is the animation of an HD run), first and whenever one of those values changes;
  ``error`` is the customer's version (``jobs.customer_errors``), never the engine's text;
- ``end``: ``{"reason"}``, then the stream closes: ``settled`` once no attempt is queued or running,
  ``deleted`` when the job is gone, ``timeout`` after ``LIVE_STREAM_MAX_SECONDS`` (open it again).

A comment line goes out every ``LIVE_KEEPALIVE_SECONDS`` so proxies keep the connection open.

Where the changes come from:

- With ``REDIS_URL`` set, the lifecycle (``jobs.attempts``) calls :func:`job_changed_on_commit` at
  every transition and progress write; once the transaction commits, the job's snapshot is
  published on its channel ``{DRAMATIQ_REDIS_NAMESPACE}:job-events:{job_id}``. Each web process
  holds one pattern subscription and hands a message to the streams of that job open in it. The
  database is read again every ``LIVE_RESYNC_SECONDS`` as well, since pub/sub keeps nothing for a
  subscriber that was reconnecting.
- Without it (the embedded mode: the worker runs inside the web process), one poller per job per
  process reads the snapshot every ``LIVE_POLL_SECONDS`` and hands it to that job's streams.

Either way 200 viewers of one job cost one subscription (or one poll) per process, not 200, and a
stream is a coroutine waiting on an event: no thread is held per viewer. Database reads run in the
event loop's shared thread pool with a connection closed after each read.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Coroutine
from functools import cache
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction

from jobs.customer_errors import customer_error
from jobs.kinds import attempt_kinds
from jobs.models import IN_FLIGHT_STATUSES, Job

logger = logging.getLogger(__name__)

Snapshot = dict[str, Any]

# "Nothing new" from a feed (a snapshot may itself be None: the job is gone).
_NOTHING: Any = object()


# --- What a page sees of a job --------------------------------------------------


def job_snapshot(job_id: str | uuid.UUID) -> Snapshot | None:
    """The job's live state (its picks, and the state of every attempt of every kind); None when it is gone."""
    row = Job.objects.filter(pk=job_id).values("selected_restore_id", "latest_animation_id").first()
    if row is None:
        return None
    attempts: list[dict[str, Any]] = []
    for kind in attempt_kinds():
        fields = ["id", "status", "progress", "error_type", "error_message", "queued_at"]
        if kind.parent_field:
            fields.append(kind.parent_field)
        for attempt in kind.rows().filter(job_id=job_id).only(*fields).order_by("queued_at", "id"):
            error = customer_error(attempt)
            parent = getattr(attempt, f"{kind.parent_field}_id") if kind.parent_field else None
            attempts.append(
                {
                    "kind": kind.name,
                    "id": str(attempt.pk),
                    "parent": str(parent) if parent is not None else None,
                    "status": attempt.status,
                    "progress": attempt.progress,
                    "error": None if error is None else {"code": error.code, "message": error.message},
                }
            )
    return {
        "job": {
            "id": str(job_id),
            "selected_restore": _str_or_none(row["selected_restore_id"]),
            "latest_animation": _str_or_none(row["latest_animation_id"]),
        },
        "attempts": attempts,
    }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def is_settled(snapshot: Snapshot) -> bool:
    """No attempt of the job is queued or running: nothing more will change by itself."""
    return not any(attempt["status"] in IN_FLIGHT_STATUSES for attempt in snapshot["attempts"])


# --- Announcing a change (workers and web processes, after commit) -------------------


def channel(job_id: str | uuid.UUID) -> str:
    return f"{settings.DRAMATIQ_REDIS_NAMESPACE}:job-events:{job_id}"


def _channel_pattern() -> str:
    return f"{settings.DRAMATIQ_REDIS_NAMESPACE}:job-events:*"


@cache
def _publisher(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


def job_changed(job_id: str | uuid.UUID) -> None:
    """Tell the job's viewers it changed: publish its snapshot when there is Redis (else they poll).

    Called once the change is committed. A failure is logged and swallowed: the viewers'
    periodic database read still brings the change, a few seconds late.
    """
    url = settings.REDIS_URL
    if not url:
        return
    try:
        payload = json.dumps({"snapshot": job_snapshot(job_id)})
        _publisher(url).publish(channel(job_id), payload)
    except Exception:
        logger.warning("live.publish_failed job_id=%s", job_id, exc_info=True)


def job_changed_on_commit(job_id: str | uuid.UUID) -> None:
    """:func:`job_changed` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: job_changed(job_id))


# --- The viewers' side (web processes, in the event loop) ------------------------------


def _read_snapshot_closing(job_id: str) -> Snapshot | None:
    try:
        return job_snapshot(job_id)
    finally:
        # A thread of the loop's shared pool: keep no connection open in it between reads.
        connection.close()


async def read_snapshot(job_id: str) -> Snapshot | None:
    return await sync_to_async(_read_snapshot_closing, thread_sensitive=False)(job_id)


def _spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    # A context of its own: the task outlives the request that started it, and must not run
    # its database reads in that request's thread.
    return asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())


class _Feed:
    """One stream's mailbox. Only the latest snapshot matters: a newer one replaces one not yet read."""

    def __init__(self) -> None:
        self._latest: Any = _NOTHING
        self._ready = asyncio.Event()

    def put(self, snapshot: Snapshot | None) -> None:
        self._latest = snapshot
        self._ready.set()

    async def get(self, timeout: float) -> Any:
        """The latest snapshot, or ``_NOTHING`` when none came within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return _NOTHING
        self._ready.clear()
        value, self._latest = self._latest, _NOTHING
        return value


class _Hub:
    """The streams open in this process, by job, and what feeds them (one poller per job, one subscription)."""

    def __init__(self) -> None:
        self.feeds: dict[str, set[_Feed]] = {}
        self.pollers: dict[str, asyncio.Task[None]] = {}
        self.listener: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def join(self, job_id: str) -> _Feed:
        feed = _Feed()
        self.feeds.setdefault(job_id, set()).add(feed)
        if job_id not in self.pollers:
            self.pollers[job_id] = _spawn(self._poll(job_id))
        if settings.REDIS_URL and (self.listener is None or self.listener.done()):
            self.subscribed.clear()
            self.listener = _spawn(self._listen(str(settings.REDIS_URL)))
        return feed

    def leave(self, job_id: str, feed: _Feed) -> None:
        feeds = self.feeds.get(job_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self.feeds[job_id]
                poller = self.pollers.pop(job_id, None)
                if poller is not None:
                    poller.cancel()
        if not self.feeds and self.listener is not None:
            self.listener.cancel()
            self.listener = None

    async def ready(self, timeout: float) -> None:
        """Wait (a little) until the Redis subscription is live, so no announcement falls between."""
        if self.listener is None:
            return
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout)
        except TimeoutError:
            logger.warning("live.subscribe_slow: relying on the database reads until Redis answers")

    def deliver(self, job_id: str, snapshot: Snapshot | None) -> None:
        for feed in self.feeds.get(job_id, ()):
            feed.put(snapshot)

    async def _poll(self, job_id: str) -> None:
        interval = float(settings.LIVE_RESYNC_SECONDS if settings.REDIS_URL else settings.LIVE_POLL_SECONDS)
        last: Any = _NOTHING
        while True:
            await asyncio.sleep(interval)
            try:
                snapshot = await read_snapshot(job_id)
            except Exception:
                logger.warning("live.read_failed job_id=%s", job_id, exc_info=True)
                continue
            if snapshot != last:
                last = snapshot
                self.deliver(job_id, snapshot)

    async def _listen(self, url: str) -> None:
        import redis.asyncio as aioredis

        prefix = _channel_pattern()[:-1]
        backoff = 0.5
        while True:
            client = aioredis.Redis.from_url(url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(_channel_pattern())
                    self.subscribed.set()
                    backoff = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        job_id = message["channel"].decode().removeprefix(prefix)
                        if job_id in self.feeds:
                            self.deliver(job_id, json.loads(message["data"])["snapshot"])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.subscribed.clear()
                logger.warning("live.subscription_lost: retrying in %.1f s", backoff, exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                await client.aclose()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = weakref.WeakKeyDictionary()


def _hub() -> _Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = _Hub()
    return hub


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Sent:
    """What one stream has told its viewer, so it only sends what changed."""

    def __init__(self) -> None:
        self.job: dict[str, Any] | None = None
        self.attempts: dict[str, dict[str, Any]] = {}

    def changes(self, snapshot: Snapshot) -> list[bytes]:
        chunks = []
        if snapshot["job"] != self.job:
            self.job = snapshot["job"]
            chunks.append(_event("job", snapshot["job"]))
        for attempt in snapshot["attempts"]:
            if self.attempts.get(attempt["id"]) != attempt:
                self.attempts[attempt["id"]] = attempt
                chunks.append(_event("attempt", attempt))
        return chunks


async def job_event_stream(job_id: str) -> AsyncIterator[bytes]:
    """The Server-Sent Events of one viewer of the job (the caller checked they may see it)."""
    loop = asyncio.get_running_loop()
    hub = _hub()
    feed = hub.join(job_id)
    try:
        yield b"retry: 3000\n\n"
        await hub.ready(timeout=2.0)
        snapshot: Any = await read_snapshot(job_id)
        sent = _Sent()
        deadline = loop.time() + float(settings.LIVE_STREAM_MAX_SECONDS)
        while True:
            if snapshot is None:
                yield _event("end", {"reason": "deleted"})
                return
            if snapshot is not _NOTHING:
                for chunk in sent.changes(snapshot):
                    yield chunk
                if is_settled(snapshot):
                    yield _event("end", {"reason": "settled"})
                    return
            remaining = deadline - loop.time()
            if remaining <= 0:
                yield _event("end", {"reason": "timeout"})
                return
            snapshot = await feed.get(min(float(settings.LIVE_KEEPALIVE_SECONDS), remaining))
            if snapshot is _NOTHING:
                yield b": keep-alive\n\n"
    finally:
        hub.leave(job_id, feed)
