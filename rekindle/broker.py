"""The Redis broker our workers use: Dramatiq's, with idle consumers woken the moment a message is enqueued.

Dramatiq's Redis consumer finds new messages by polling: after each empty fetch it sleeps
with a backoff that grows to the worker's idle ceiling (``dramatiq_worker_timeout``), so a
message sent to an idle worker waits on average about 40% of that ceiling before it
starts. A short ceiling makes idle workers poll Redis many times a second (each consumer
thread of each process runs a Lua fetch per poll).

Here the sender also publishes on a per-queue channel after each enqueue, and an idle
consumer waits on that channel instead of sleeping: a new message starts within a Redis
round trip, and the ceiling only bounds how long a consumer goes without fetching when
no wake-up comes (a sender using plain ``RedisBroker``, a wake-up lost to a reconnect).
Queues, messages, acks and the Lua scripts are Dramatiq's own, unchanged: the two brokers
read and write the same queues, and either side may be the plain one. Each consumer (one
per queue and delay queue, per worker process) holds one more Redis connection, for its
subscription.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

logger = logging.getLogger(__name__)

# Dramatiq's consumer sleeps after an empty fetch for up to its timeout; ours waits on the
# wake-up channel instead, so Dramatiq's own sleep is capped at this (milliseconds).
_INNER_SLEEP_MS = 1


def wakeup_channel(namespace: str, queue_name: str) -> str:
    """The pub/sub channel announcing new messages on ``queue_name`` (delay queues have their own)."""
    return f"{namespace}:{queue_name}.wakeup"


class WakingRedisBroker(RedisBroker):
    """``RedisBroker`` whose consumers wake on a published notice instead of polling on a timer."""

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        try:
            self.client.publish(wakeup_channel(self.namespace, enqueued.queue_name), b"1")
        except redis.RedisError:
            # The message is in its queue; an idle consumer finds it at its next poll.
            logger.debug("Could not publish the wake-up for %s", enqueued.queue_name, exc_info=True)
        return enqueued

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _WakingConsumer:
        return _WakingConsumer(self, queue_name, prefetch, timeout)


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's consumer; between empty fetches it waits for a wake-up (or the idle ceiling)."""

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, _INNER_SLEEP_MS)  # type: ignore[no-untyped-call]
        self.idle_ceiling_ms = timeout
        self.idle_misses = 0
        self.channel = wakeup_channel(broker.namespace, queue_name)
        self.wakeups: Any = None

    def _wait_for_wakeup(self, seconds: float) -> None:
        try:
            if self.wakeups is None:
                # Subscribed once and kept: a notice published while a message is handled
                # waits in the subscription, so none is lost between two waits.
                self.wakeups = self.broker.client.pubsub(ignore_subscribe_messages=True)
                self.wakeups.subscribe(self.channel)
            self.wakeups.get_message(timeout=seconds)
        except redis.RedisError as exc:
            self._close_wakeups()
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def __next__(self) -> Any:
        message = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            self.idle_misses = 0
            return message
        self.idle_misses, backoff_ms = compute_backoff(self.idle_misses, max_backoff=self.idle_ceiling_ms)
        self._wait_for_wakeup(backoff_ms / 1000)
        return None

    def _close_wakeups(self) -> None:
        if self.wakeups is not None:
            with contextlib.suppress(redis.RedisError):
                self.wakeups.close()
            self.wakeups = None

    def close(self) -> None:
        self._close_wakeups()
        super().close()
