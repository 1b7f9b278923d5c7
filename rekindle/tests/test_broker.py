"""The workers' Redis broker on the real Redis: an idle consumer wakes on enqueue, and still polls without a notice."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

from rekindle.broker import WakeupNotices, WakingRedisBroker, broker_started_at, idle_wait_ms, wakeup_channel
from rekindle.testing.pipeline import RedisServer, wait_for
from rekindle.testing.services import REDIS_URL

pytestmark = pytest.mark.redis

QUEUE = "wakeup-test"
# Far above any wait these tests allow: a consumer that only polled would still be asleep.
LONG_CEILING_MS = 120_000


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"rekindle-test-{uuid.uuid4().hex[:12]}"
    yield name
    cleanup = RedisBroker(url=REDIS_URL, namespace=name)
    cleanup.flush_all()
    cleanup.close()


def _message(text: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=QUEUE, actor_name="noop", args=(text,), kwargs={}, options={})


def _broker(cls: type[RedisBroker], url: str, namespace: str) -> RedisBroker:
    broker = cls(url=url, namespace=namespace, middleware=[])
    broker.declare_queue(QUEUE)
    return broker


def _idle_consumer(broker: RedisBroker, ceiling_ms: int, queue_name: str = QUEUE) -> Any:
    """A consumer that has already found its queue empty many times (its backoff at the ceiling)."""
    consumer: Any = broker.consume(queue_name, timeout=ceiling_ms)
    consumer.idle_misses = 32
    return consumer


def _next_in_thread(consumer: Any) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(next(consumer)), daemon=True)
    thread.start()
    return thread, results


def test_it_wakes_an_idle_consumer_as_soon_as_a_message_is_enqueued(namespace: str) -> None:
    worker_side = _broker(WakingRedisBroker, REDIS_URL, namespace)
    sender = _broker(WakingRedisBroker, REDIS_URL, namespace)
    consumer = _idle_consumer(worker_side, LONG_CEILING_MS)
    try:
        assert next(consumer) is None  # subscribes, then waits; the subscription's confirmation ends this wait
        thread, results = _next_in_thread(consumer)
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the idle consumer should be waiting for a notice, not polling"

        sender.enqueue(_message("hello"))

        thread.join(timeout=10)
        assert not thread.is_alive(), "the consumer slept through the wake-up"
        assert results == [None]  # woken: the next call fetches
        message = next(consumer)
        assert message is not None
        assert message.args == ("hello",)
        consumer.ack(message)
    finally:
        consumer.close()
        worker_side.close()
        sender.close()


def test_it_wakes_the_delay_queues_consumer_for_a_delayed_message(namespace: str) -> None:
    worker_side = _broker(WakingRedisBroker, REDIS_URL, namespace)
    sender = _broker(WakingRedisBroker, REDIS_URL, namespace)
    consumer = _idle_consumer(worker_side, LONG_CEILING_MS, queue_name=dq_name(QUEUE))
    try:
        assert next(consumer) is None
        thread, results = _next_in_thread(consumer)
        thread.join(timeout=0.5)
        assert thread.is_alive()

        sender.enqueue(_message("later"), delay=60_000)

        thread.join(timeout=10)
        assert not thread.is_alive(), "the delay queue's consumer slept through the wake-up"
        assert results == [None]
        message = next(consumer)
        assert message is not None
        assert message.args == ("later",)
        assert "eta" in message.options  # the worker holds it until then
        consumer.ack(message)
    finally:
        consumer.close()
        worker_side.close()
        sender.close()


def test_it_installs_its_notice_middleware_once() -> None:
    broker = WakingRedisBroker(url=REDIS_URL, middleware=[WakeupNotices()])
    try:
        assert sum(isinstance(m, WakeupNotices) for m in broker.middleware) == 1
    finally:
        broker.close()


def test_it_waits_longer_after_each_empty_fetch_up_to_the_ceiling() -> None:
    assert all(5 <= idle_wait_ms(0, 1000) <= 10 for _ in range(50))
    assert all(40 <= idle_wait_ms(3, 1000) <= 80 for _ in range(50))
    assert all(500 <= idle_wait_ms(32, 1000) <= 1000 for _ in range(50))
    assert all(0 <= idle_wait_ms(32, 1) <= 1 for _ in range(50))


def test_it_keeps_a_notice_published_while_the_consumer_was_not_waiting(namespace: str) -> None:
    worker_side = _broker(WakingRedisBroker, REDIS_URL, namespace)
    consumer = _idle_consumer(worker_side, LONG_CEILING_MS)
    try:
        assert next(consumer) is None  # subscribed from here on
        # As when a message arrives between the consumer's empty fetch and its wait.
        worker_side.client.publish(wakeup_channel(namespace, QUEUE), b"1")

        thread, results = _next_in_thread(consumer)
        thread.join(timeout=10)
        assert not thread.is_alive(), "a notice published between two waits was lost"
        assert results == [None]
    finally:
        consumer.close()
        worker_side.close()


def test_it_still_finds_messages_from_a_plain_redis_broker_by_polling(namespace: str) -> None:
    worker_side = _broker(WakingRedisBroker, REDIS_URL, namespace)
    plain_sender = _broker(RedisBroker, REDIS_URL, namespace)
    consumer = _idle_consumer(worker_side, 50)
    try:
        plain_sender.enqueue(_message("polled"))
        message = wait_for(lambda: next(consumer), timeout=10, interval=0, what="the polled message")
        assert message.args == ("polled",)
        consumer.ack(message)
    finally:
        consumer.close()
        worker_side.close()
        plain_sender.close()


def test_it_reports_a_lost_redis_as_a_broker_connection_error() -> None:
    server = RedisServer().start()
    broker = _broker(WakingRedisBroker, server.url, "rekindle-test-down")
    consumer = _idle_consumer(broker, 50)
    try:
        assert next(consumer) is None
        server.stop()
        with pytest.raises(ConnectionClosed):
            next(consumer)
    finally:
        consumer.close()
        broker.close()
        server.stop()


def _sleep_until_second_fraction(fraction: float) -> None:
    now = time.time()
    time.sleep((fraction - now % 1) % 1)


def test_the_broker_start_it_gives_is_never_before_redis_really_started() -> None:
    # Redis counts its uptime in whole seconds from a truncated start: start it late in one
    # second and ask early in the next, where the uptime reads a whole second already.
    _sleep_until_second_fraction(0.8)
    before_start = timezone.now()
    server = RedisServer().start()
    broker = _broker(WakingRedisBroker, server.url, "rekindle-test-uptime")
    try:
        _sleep_until_second_fraction(0.1)
        started_at = broker_started_at(broker)
        assert started_at is not None
        assert started_at >= before_start
    finally:
        broker.close()
        server.stop()
