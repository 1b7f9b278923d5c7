"""Overflow to RunPod: how many runs may be there at once and how many GPU seconds a day may go there.

``OverflowBudget.try_start`` admits a run when fewer than ``OVERFLOW_MAX_CONCURRENT`` are on
RunPod and today's GPU seconds (spent, plus the expected seconds of the runs still there)
leave room for this one's expected seconds under ``OVERFLOW_DAILY_GPU_SECONDS``; it says why
when it does not. ``finish`` books what the run really used. With Redis the counts are the
fleet's (one Lua script, so two processes never both take the last place); without, this
process's. Days are UTC.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from rekindle.engines.comfyui import metrics
from rekindle.engines.comfyui.config import OverflowConfig

# A RunPod run that is never finished (its worker died) stops counting after this.
_RUN_LEASE_SECONDS = 2 * 3600

_TRY_START = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local running = redis.call('ZCARD', KEYS[1])
if running >= tonumber(ARGV[1]) then return {0, 'concurrency'} end
local spent = tonumber(redis.call('HGET', KEYS[2], 'gpu_seconds') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
if spent + reserved + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return {0, 'budget'} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[4])
redis.call('HINCRBYFLOAT', KEYS[2], 'reserved', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'runs', 1)
redis.call('EXPIRE', KEYS[2], 8 * 86400)
return {1, 'ok'}
"""

_FINISH = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[2], 'reserved', -tonumber(ARGV[2]))
end
redis.call('HINCRBYFLOAT', KEYS[2], 'gpu_seconds', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class OverflowDay:
    """What overflow did on one UTC day."""

    day: str
    runs: int
    gpu_seconds: float
    running: int
    cost: float
    budget_gpu_seconds: float


@dataclass(frozen=True)
class OverflowTicket:
    token: str
    expected_seconds: float
    day: str


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class OverflowBudget:
    """Admission to RunPod within the concurrency and daily GPU-seconds limits (shared through Redis if given)."""

    def __init__(self, config: OverflowConfig, client: redis.Redis | None = None, namespace: str = "rekindle") -> None:
        self.config = config
        self.redis = client
        self.prefix = f"{namespace}:fleet:overflow:"
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}
        self._days: dict[str, dict[str, float]] = {}
        if client is not None:
            self._start_script = client.register_script(_TRY_START)
            self._finish_script = client.register_script(_FINISH)

    def _day_key(self, day: str) -> str:
        return f"{self.prefix}day:{day}"

    def try_start(self, expected_seconds: float) -> tuple[OverflowTicket | None, str]:
        """A ticket for one RunPod run, or None and why not (``concurrency`` or ``budget``)."""
        day = _today()
        token = uuid.uuid4().hex
        expected = max(expected_seconds, 0.0)
        if self.redis is not None:
            try:
                allowed, why = self._start_script(
                    keys=[f"{self.prefix}running", self._day_key(day)],
                    args=[
                        self.config.max_concurrent,
                        self.config.daily_gpu_seconds,
                        expected,
                        token,
                        _RUN_LEASE_SECONDS * 1000,
                    ],
                )
            except redis.RedisError:
                return None, "redis_unreachable"
            reason = why.decode() if isinstance(why, bytes) else str(why)
            return (OverflowTicket(token, expected, day), "") if int(allowed) else (None, reason)
        with self._lock:
            now = time.monotonic()
            self._running = {t: until for t, until in self._running.items() if until > now}
            if len(self._running) >= self.config.max_concurrent:
                return None, "concurrency"
            totals = self._days.setdefault(day, {"gpu_seconds": 0.0, "reserved": 0.0, "runs": 0.0})
            if totals["gpu_seconds"] + totals["reserved"] + expected > self.config.daily_gpu_seconds:
                return None, "budget"
            self._running[token] = now + _RUN_LEASE_SECONDS
            totals["reserved"] += expected
            totals["runs"] += 1
        return OverflowTicket(token, expected, day), ""

    def finish(self, ticket: OverflowTicket, gpu_seconds: float) -> None:
        """Book the run's real GPU seconds and free its place."""
        metrics.OVERFLOW_GPU_SECONDS.inc(gpu_seconds)
        metrics.OVERFLOW_COST.inc(gpu_seconds * self.config.cost_per_gpu_second)
        if self.redis is not None:
            # Redis gone: the lease runs out; the seconds are in the metrics and on the attempt.
            with contextlib.suppress(redis.RedisError):
                self._finish_script(
                    keys=[f"{self.prefix}running", self._day_key(ticket.day)],
                    args=[ticket.token, ticket.expected_seconds, gpu_seconds],
                )
            return
        with self._lock:
            if self._running.pop(ticket.token, None) is not None:
                self._days[ticket.day]["reserved"] -= ticket.expected_seconds
            self._days.setdefault(ticket.day, {"gpu_seconds": 0.0, "reserved": 0.0, "runs": 0.0})
            self._days[ticket.day]["gpu_seconds"] += gpu_seconds

    def today(self) -> OverflowDay:
        day = _today()
        if self.redis is not None:
            try:
                values = self.redis.hgetall(self._day_key(day))
                running = int(self.redis.zcount(f"{self.prefix}running", int(time.time() * 1000), "+inf"))
            except redis.RedisError:
                values, running = {}, 0
            decoded = {
                (k.decode() if isinstance(k, bytes) else str(k)): float(v.decode() if isinstance(v, bytes) else v)
                for k, v in values.items()
            }
        else:
            with self._lock:
                decoded = dict(self._days.get(day, {}))
                running = sum(1 for until in self._running.values() if until > time.monotonic())
        seconds = decoded.get("gpu_seconds", 0.0)
        return OverflowDay(
            day=day,
            runs=int(decoded.get("runs", 0)),
            gpu_seconds=seconds,
            running=running,
            cost=seconds * self.config.cost_per_gpu_second,
            budget_gpu_seconds=self.config.daily_gpu_seconds,
        )
