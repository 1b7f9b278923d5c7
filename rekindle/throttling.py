"""Rate limits on the expensive endpoints (upload, restore, animate), per client address and per user.

A view opts in with ``throttle_scope = "upload"`` (class-based views; both classes
are in DRF's default throttle classes) or ``@throttle_classes(throttles_for("upload"))``
(function views). Each scope has two rates in ``settings.THROTTLE_RATES``:
``<scope>_ip`` counts every request from a client address, ``<scope>_user`` every
request of a signed-in user. Going over either is a 429 with ``Retry-After`` and
the API's JSON error (rekindle/api_errors.py).

Counting is a fixed window per rate period in the ``THROTTLE_CACHE`` cache (Redis
in production, shared by every process): one atomic ``incr`` per request, so
concurrent requests are never undercounted. A fixed window lets a client spend
two windows' allowance around a boundary; for these limits (abuse protection, not
billing) that is acceptable. When the cache is down the request is let through
and the failure logged: a Redis outage should not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from rekindle import metrics

if TYPE_CHECKING:
    # DRF imports this module while rest_framework.views is loading.
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

SCOPES = ("upload", "restore", "animate", "link")
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"20/hour"`` as ``(20, 3600)``: requests allowed per period of seconds."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip()[0]]


class ScopedRateThrottle(BaseThrottle):
    """Counts the requests of one identity against the rate of the view's scope."""

    kind: ClassVar[str]
    scope: ClassVar[str | None] = None  # fixed by throttles_for(); otherwise the view's throttle_scope
    clock: ClassVar[Callable[[], float]] = time.time

    def __init__(self) -> None:
        self._wait: float | None = None

    def identity(self, request: Request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        scope = self.scope or getattr(view, "throttle_scope", None)
        if not scope:
            return True
        rates: dict[str, str | None] = settings.THROTTLE_RATES
        key = f"{scope}_{self.kind}"
        if key not in rates:
            raise ImproperlyConfigured(f"THROTTLE_RATES has no rate {key!r} for throttle scope {scope!r}")
        rate = rates[key]
        identity = self.identity(request)
        if rate is None or identity is None:
            return True
        limit, period = parse_rate(rate)
        now = type(self).clock()
        window = int(now // period)
        count = self._count(f"{key}:{identity}:{window}", period)
        if count is None or count <= limit:
            return True
        self._wait = max(1.0, (window + 1) * period - now)
        metrics.THROTTLE_REFUSALS.labels(scope=scope, identity=self.kind).inc()
        return False

    @staticmethod
    def _count(key: str, period: int) -> int | None:
        """This request's number in its window, or None when the cache cannot count."""
        cache = caches[settings.THROTTLE_CACHE]
        try:
            # The window's key outlives the window slightly, then expires on its own.
            cache.add(key, 0, timeout=period + 5)
            try:
                return int(cache.incr(key))
            except ValueError:  # expired between add and incr
                cache.add(key, 0, timeout=period + 5)
                return int(cache.incr(key))
        except Exception:
            logger.exception("Throttle cache unavailable; letting the request through")
            return None

    def wait(self) -> float | None:
        return None if self._wait is None else float(math.ceil(self._wait))


class ScopedIPRateThrottle(ScopedRateThrottle):
    """Every request from one client address (behind NUM_PROXIES proxies)."""

    kind = "ip"

    def identity(self, request: Request) -> str | None:
        return self.get_ident(request) or None


class ScopedUserRateThrottle(ScopedRateThrottle):
    """Every request of one signed-in user; anonymous requests are left to the address limit."""

    kind = "user"

    def identity(self, request: Request) -> str | None:
        user = request.user
        if user is None or not user.is_authenticated:
            return None
        return str(user.pk)


def throttles_for(scope: str) -> list[type[BaseThrottle]]:
    """Both throttle classes bound to ``scope``, for ``@throttle_classes(...)`` on function views."""
    if scope not in SCOPES:
        raise ImproperlyConfigured(f"Unknown throttle scope {scope!r}; known: {', '.join(SCOPES)}")
    attrs: dict[str, Any] = {"scope": scope, "__module__": __name__}
    return [
        type(f"{scope.title()}IPRateThrottle", (ScopedIPRateThrottle,), attrs),
        type(f"{scope.title()}UserRateThrottle", (ScopedUserRateThrottle,), attrs),
    ]


def client_address(request: HttpRequest | Request) -> str:
    """The client's address as the address throttles count it: ``X-Forwarded-For`` read behind
    ``NUM_PROXIES`` proxies (the entry the nearest trusted proxy added), else ``REMOTE_ADDR``."""
    # DRF's get_ident reads only request.META, which a Django request has too.
    return str(BaseThrottle().get_ident(cast(Request, request)) or "")
