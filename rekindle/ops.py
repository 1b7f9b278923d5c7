"""The operator's endpoints: ``/healthz`` (the process answers), ``/readyz`` (its dependencies do) and ``/metrics``.

They are answered by :class:`OpsEndpointsMiddleware`, near the top of ``MIDDLEWARE``, before
anything reads the Host header, a session, a cookie or a CSRF token, and outside DRF (no
throttles): a load balancer or an orchestrator probes by IP address, which ``ALLOWED_HOSTS``
would refuse with a 400, and a probe must not start sessions or spend throttle budgets. Only
django-prometheus' first middleware runs before, so probes and scrapes are in the HTTP totals.

``/metrics`` is Prometheus' text format, for clients whose address (read as the throttles read
it, behind ``NUM_PROXIES`` proxies) is in ``METRICS_ALLOWED_IPS``, or that send
``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time). With
``PROMETHEUS_MULTIPROC_DIR`` set it adds up the files of every process (gunicorn's workers, the
``rundramatiq`` processes on the same machine); then come what the registered scrape collectors
read at that moment (the attempts queued and running per kind, ``jobs.metrics``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from rekindle.api_errors import error_body
from rekindle.readiness import run_checks
from rekindle.throttling import client_address

logger = logging.getLogger(__name__)

View = Callable[[HttpRequest], HttpResponse]


def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and answers HTTP; nothing else is asked (no database, no Redis)."""
    return _no_store(JsonResponse({"status": "ok"}))


def readyz(request: HttpRequest) -> HttpResponse:
    """Each dependency's check with its latency; 503 with ``Retry-After`` when any of them fails."""
    results = run_checks()
    ready = all(result.ok for result in results)
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {result.name: result.as_json() for result in results},
    }
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = str(settings.READINESS_RETRY_AFTER_SECONDS)
        logger.warning("readyz.unavailable %s", {r.name: r.error for r in results if not r.ok})
    return _no_store(response)


def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return _no_store(refusal)
    return _no_store(HttpResponse(metrics_payload(), content_type=CONTENT_TYPE_LATEST))


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the client may read the metrics; else the 401 (no or a wrong token) or 403 to answer."""
    if _address_allowed(client_address(request)):
        return None
    token: str = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    if not token:
        return JsonResponse(
            error_body("permission_denied", "The metrics are not open to this address (METRICS_ALLOWED_IPS)."),
            status=403,
        )
    response = JsonResponse(
        error_body("not_authenticated", "The metrics need the bearer token (METRICS_TOKEN) from this address."),
        status=401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in settings.METRICS_ALLOWED_IPS)


def metrics_payload() -> bytes:
    """Every metric of this process, or of every process writing to ``PROMETHEUS_MULTIPROC_DIR``, then the
    attempts in flight."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        written = generate_latest(registry)
    else:
        written = generate_latest(REGISTRY)
    live = CollectorRegistry(auto_describe=False)
    for collector in _scrape_collectors:
        live.register(collector)
    return written + generate_latest(live)


# Collectors read at each scrape (e.g. the attempts in flight, which the jobs app registers from its ready()).
_scrape_collectors: list[Collector] = []


def register_scrape_collector(collector: Collector) -> None:
    """Have ``/metrics`` run ``collector`` at every scrape, in the answering process (not through the files)."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)


ROUTES: dict[str, View] = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}


class OpsEndpointsMiddleware:
    """Answers the operator's endpoints itself; every other request goes on down the middleware."""

    def __init__(self, get_response: View) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = ROUTES.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(error_body("method_not_allowed", "Only GET and HEAD are answered."), status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
