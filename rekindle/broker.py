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

Only Dramatiq's public extension points are used, so nothing here reaches into its
internals:

- the notice is sent from the ``after_enqueue`` hook of a :class:`dramatiq.Middleware`
  (:class:`WakeupNotices`, which :class:`WakingRedisBroker` installs on itself), and
  ``RedisBroker.client`` and ``RedisBroker.namespace`` name the connection and channel;
- the consumer is a :class:`dramatiq.Consumer` wrapped around the one
  ``RedisBroker.consume`` returns, asked for an idle timeout of 1 ms (the ``timeout``
  argument the worker passes, documented as the consumer's idle wait), so the inner
  consumer's own sleep after an empty fetch is negligible and the wait is ours. Acks,
  nacks, requeues and fetches are the inner consumer's.
"""

from __future__ import annotations

import contextlib
import logging
import random
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import redis
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Retries

from rekindle.db_outage import is_connection_error

logger = logging.getLogger(__name__)

# The idle timeout asked of Dramatiq's own consumer (milliseconds): its sleep after an
# empty fetch is capped at this, and ours (the wait for a notice) takes its place.
_INNER_TIMEOUT_MS = 1
# The first wait after an empty fetch; each further empty fetch doubles it, up to the ceiling.
_FIRST_WAIT_MS = 5


def wakeup_channel(namespace: str, queue_name: str) -> str:
    """The pub/sub channel announcing new messages on ``queue_name`` (delay queues have their own)."""
    return f"{namespace}:{queue_name}.wakeup"


def idle_wait_ms(misses: int, ceiling_ms: int) -> int:
    """How long a consumer waits for a notice after ``misses`` empty fetches in a row (with jitter).

    Doubles from 5 ms and stays at 50-100% of ``ceiling_ms`` once it gets there, so a
    consumer that missed a notice finds its message soon after a busy spell and idle
    consumers do not fetch in step.
    """
    wait = _FIRST_WAIT_MS * 2 ** min(misses, 32)
    wait = int(wait * random.uniform(1, 2))  # noqa: S311  (jitter, not secrecy)
    if wait > ceiling_ms:
        wait = int(ceiling_ms * random.uniform(0.5, 1))  # noqa: S311
    return wait


class WakeupNotices(dramatiq.Middleware):
    """Publishes a notice on the queue's wake-up channel after each message a Redis broker enqueues."""

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        if not isinstance(broker, RedisBroker):
            return
        # A delayed message is already on the delay queue here, and its queue_name says so.
        try:
            broker.client.publish(wakeup_channel(broker.namespace, message.queue_name), b"1")
        except redis.RedisError:
            # The message is in its queue; an idle consumer finds it at its next poll.
            logger.debug("Could not publish the wake-up for %s", message.queue_name, exc_info=True)


# A worker process's unacknowledged messages (the one it runs and those it prefetched) go back to their
# queue once its Redis heartbeat is this old (ms) and a queue maintenance runs (Dramatiq's dispatch.lua).
# Every Redis command of a process beats (its delay-queue consumers fetch at least every idle ceiling,
# 100 ms for our workers, even while every thread is busy), so 15 s is far above a live worker's gap and
# still tolerates some clock skew between machines (the beat is the sender's clock). Dramatiq's default is
# 60 s. A live worker wrongly judged dead only has its messages delivered twice: the claim makes the
# second delivery a no-op.
HEARTBEAT_TIMEOUT_MS = 15_000
# Commands out of a million that run that maintenance: 1% instead of Dramatiq's 0.1%, so with consumers
# fetching ~10 times a second a queue is swept every few seconds instead of every minute or two. A sweep
# with no dead worker is two small sorted-set reads.
MAINTENANCE_CHANCE = 10_000


class WakingRedisBroker(RedisBroker):
    """``RedisBroker`` whose consumers wake on a published notice instead of polling on a timer.

    It also returns a dead worker's messages sooner than Dramatiq's defaults would
    (:data:`HEARTBEAT_TIMEOUT_MS`, :data:`MAINTENANCE_CHANCE`): after ``kill -9`` its
    prefetched messages come back in about 15-25 s instead of 2-3 minutes.
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("heartbeat_timeout", HEARTBEAT_TIMEOUT_MS)
        options.setdefault("maintenance_chance", MAINTENANCE_CHANCE)
        super().__init__(**options)  # type: ignore[no-untyped-call]
        if not any(isinstance(m, WakeupNotices) for m in self.middleware):
            self.add_middleware(WakeupNotices())

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakingConsumer:
        inner = super().consume(queue_name, prefetch, _INNER_TIMEOUT_MS)
        return WakingConsumer(self, inner, queue_name, timeout)


class WakingConsumer(dramatiq.Consumer):
    """Dramatiq's Redis consumer; between empty fetches it waits for a wake-up (or the idle ceiling)."""

    def __init__(self, broker: RedisBroker, inner: dramatiq.Consumer, queue_name: str, idle_ceiling_ms: int) -> None:
        self.broker = broker
        self.inner = inner
        self.queue_name = queue_name
        self.idle_ceiling_ms = idle_ceiling_ms
        self.idle_misses = 0
        self.channel = wakeup_channel(broker.namespace, queue_name)
        self.wakeups: Any = None

    def ack(self, message: dramatiq.MessageProxy) -> None:
        self.inner.ack(message)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        self.inner.nack(message)

    def requeue(self, messages: Any) -> None:
        self.inner.requeue(messages)

    def __next__(self) -> dramatiq.MessageProxy | None:
        message = next(self.inner)
        if message is not None:
            self.idle_misses = 0
            return message
        wait_ms = idle_wait_ms(self.idle_misses, self.idle_ceiling_ms)
        self.idle_misses += 1
        self._wait_for_wakeup(wait_ms / 1000)
        return None

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

    def _close_wakeups(self) -> None:
        if self.wakeups is not None:
            with contextlib.suppress(redis.RedisError):
                self.wakeups.close()
            self.wakeups = None

    def close(self) -> None:
        self._close_wakeups()
        self.inner.close()


# Redis reports its uptime in whole seconds.
_UPTIME_RESOLUTION = timedelta(seconds=1)


def broker_started_at(broker: dramatiq.Broker | None = None) -> datetime | None:
    """When the broker's Redis server last started (now minus its uptime); None without Redis or when unreachable.

    A Redis that restarted may have lost every message it held (no persistence, or a
    kill -9 since the last save), so a queued attempt sent before this moment may have no
    message any more: ``requeue_stuck_attempts`` sends those again.

    Redis counts its uptime in whole seconds from a start time it also truncates, so the
    uptime can read up to a second long: the moment given is a second later than the
    uptime says (but never after now), so never earlier than the real start. Erring late
    only sends a message twice, which the claim makes harmless; erring early would leave
    a lost one unsent.
    """
    broker = broker if broker is not None else dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if not isinstance(client, redis.Redis):
        return None
    try:
        uptime = int(client.info("server")["uptime_in_seconds"])
    except (redis.RedisError, KeyError, TypeError, ValueError):
        return None
    now = timezone.now()
    return min(now, now - timedelta(seconds=uptime) + _UPTIME_RESOLUTION)


# A message whose actor met a lost database connection comes back after this long (ms), doubling per wait.
_DB_WAIT_FIRST_MS = 1_000
_DB_WAIT_MAX_MS = 10_000


class OutageAwareRetries(Retries):
    """Dramatiq's ``Retries``, except that a lost database connection is waited out, not counted.

    An actor that cannot reach the database (a restart, a failover) did nothing wrong and
    spent nothing: its message goes back on its queue's delay queue after a short wait (1 s
    doubling to 10 s, counted apart in ``db_waits``) without spending one of the message's
    retries, so a long stop never dead-letters a message; the attempt it names was never
    claimed, so its own tries are untouched too. Every other error is Dramatiq's own retry.
    The lease and ``requeue_stuck_attempts`` remain the backstop for a run the outage cut off
    after its claim.
    """

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not is_connection_error(exception):
            super().after_process_message(  # type: ignore[no-untyped-call]
                broker, message, result=result, exception=exception
            )
            return
        waits = int(message.options.get("db_waits", 0))
        message.options["db_waits"] = waits + 1
        delay = min(_DB_WAIT_FIRST_MS * 2 ** min(waits, 16), _DB_WAIT_MAX_MS)
        logger.warning(
            "message.database_wait message_id=%s actor=%s waits=%d delay_ms=%d",
            message.message_id,
            message.actor_name,
            waits + 1,
            delay,
        )
        broker.enqueue(message, delay=delay)  # type: ignore[arg-type]  # the proxy, as Retries itself enqueues it
