"""Staff console pages that are not a model's list: the dashboard and the ComfyUI nodes page.

Both are served under ``/admin/`` inside the admin's login (``admin.site.admin_view``)
and linked from the admin index. Viewing them needs the permission to view restore
attempts, since they show what attempts did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from billing.models import ZERO_DECIMAL_CURRENCIES, format_amount
from jobs.kinds import attempt_kinds
from jobs.models import AttemptStatus
from rekindle import charts
from rekindle.dashboard import STATUS_ORDER, DashboardStats, dashboard_stats
from rekindle.engines.base import NodeHealth

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "restoration.view_restoreattempt"
# Draining a node changes where work goes: the permission to change attempts.
DRAIN_PERMISSION = "restoration.change_restoreattempt"
RECENT_FAILURE_DAYS = 7
RECENT_FAILURES_PER_NODE = 5


def _require_permission(request: HttpRequest) -> None:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied


def _context(request: HttpRequest, title: str) -> dict[str, object]:
    return {**admin.site.each_context(request), "title": title}


def _money_context(stats: DashboardStats, labels: list[str]) -> dict[str, object]:
    """The dashboard's revenue and HD conversion: totals per currency, and two charts."""

    def major(amount: int, currency: str) -> float:
        return float(amount) if currency in ZERO_DECIMAL_CURRENCIES else amount / 100

    revenue_series = [
        charts.Series(currency.upper(), [major(v, currency) for v in values], charts.PALETTE[i % len(charts.PALETTE)])
        for i, (currency, values) in enumerate(stats.revenue.items())
    ]
    return {
        "revenue_totals": [format_amount(sum(values), currency) for currency, values in stats.revenue.items()],
        "hd_conversion": stats.hd_conversion,
        "hd_bought_total": sum(stats.hd_bought),
        "previews_made_total": sum(stats.previews_made),
        "revenue_chart": charts.bar_chart(
            labels, revenue_series, title="Revenue per day (net of refunds)", stacked=False
        )
        if revenue_series
        else None,
        "conversion_chart": charts.bar_chart(
            labels,
            [
                charts.Series("previews made", stats.previews_made, "#1565c0"),
                charts.Series("HD bought", stats.hd_bought, "#2e7d32"),
            ],
            title="Previews made and HD results bought per day",
            stacked=False,
        ),
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    _require_permission(request)
    stats = dashboard_stats()
    labels = [day.strftime("%m-%d") for day in stats.days]
    status_series = [
        charts.Series(AttemptStatus(status).label, stats.per_day[status], charts.STATUS_COLORS[status])
        for status in STATUS_ORDER
    ]
    context = {
        **_context(request, "Dashboard"),
        "stats": stats,
        "days": len(stats.days),
        "overall_failure_rate": stats.overall_failure_rate,
        "runs_chart": charts.bar_chart(labels, status_series, title="Runs per day by status", unit=""),
        "failure_chart": charts.line_chart(
            labels,
            [charts.Series("Failure rate", stats.failure_rate, charts.STATUS_COLORS["failed"])],
            title="Failure rate per day (failed / finished)",
            unit="%",
            maximum=max([v for v in stats.failure_rate if not math.isnan(v)] + [10.0]),
        ),
        "durations_chart": charts.hbar_chart(
            [d.workflow for d in stats.durations],
            [
                charts.Series("median", [d.median_seconds for d in stats.durations], "#1565c0"),
                charts.Series("p95", [d.p95_seconds for d in stats.durations], "#ef6c00"),
            ],
            title="Duration per workflow (seconds, succeeded runs)",
            unit="s",
        )
        if stats.durations
        else None,
        "nodes_chart": charts.hbar_chart(
            [node for node, _ in stats.node_seconds],
            [charts.Series("GPU seconds", [seconds for _, seconds in stats.node_seconds], "#6a1b9a")],
            title="GPU seconds per node",
            unit="s",
        )
        if stats.node_seconds
        else None,
        **_money_context(stats, labels),
    }
    return TemplateResponse(request, "admin/rekindle/dashboard.html", context)


@dataclass
class FailureRow:
    kind: str
    attempt_id: str
    job_id: str
    workflow: str
    finished_at: datetime | None
    error_type: str
    error_message: str
    url: str


@dataclass
class NodeRow:
    health: NodeHealth
    last_workflow: str
    last_workflow_source: str
    failures: list[FailureRow] = field(default_factory=list)

    @property
    def preflight(self) -> list[tuple[str, list[str]]]:
        return sorted(self.health.preflight.items())


def recent_failures(nodes: list[str], *, days: int = RECENT_FAILURE_DAYS) -> dict[str, list[FailureRow]]:
    """The latest failed runs on each of ``nodes`` (restore, animation and HD runs), newest first."""
    since = timezone.now() - timedelta(days=days)
    rows: dict[str, list[FailureRow]] = {node: [] for node in nodes}
    fields = ("id", "job_id", "workflow", "node", "finished_at", "error_type", "error_message")
    for kind in attempt_kinds():
        opts = kind.model._meta
        failed = (
            kind.rows()
            .filter(status=AttemptStatus.FAILED, node__in=nodes, finished_at__gte=since)
            .order_by("-finished_at")
            .values_list(*fields)[: RECENT_FAILURES_PER_NODE * max(len(nodes), 1)]
        )
        for attempt_id, job_id, workflow, node, finished_at, error_type, error_message in failed:
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[attempt_id])
            rows[node].append(
                FailureRow(
                    kind.label, str(attempt_id), str(job_id), workflow, finished_at, error_type, error_message, url
                )
            )
    epoch = datetime.min.replace(tzinfo=timezone.get_current_timezone())
    for node in rows:
        rows[node].sort(key=lambda row: row.finished_at or epoch, reverse=True)
        del rows[node][RECENT_FAILURES_PER_NODE:]
    return rows


def last_workflows(nodes: list[str]) -> dict[str, str]:
    """The workflow each node last started, from the attempts table."""
    latest: dict[str, tuple[datetime, str]] = {}
    for kind in attempt_kinds():
        for node in nodes:
            row = (
                kind.rows()
                .filter(node=node, started_at__isnull=False)
                .order_by("-started_at")
                .values_list("started_at", "workflow")
                .first()
            )
            if row is None or row[0] is None:
                continue
            started_at, workflow = row[0], row[1]
            if node not in latest or started_at > latest[node][0]:
                latest[node] = (started_at, workflow)
    return {node: workflow for node, (_, workflow) in latest.items()}


def node_rows() -> tuple[list[NodeRow], str]:
    """Every configured node with its health, and an error text when the engine could not say."""
    from rekindle.engines import get_engine

    try:
        healths = get_engine().health()
    except Exception as exc:
        logger.exception("engine health check failed")
        return [], f"{type(exc).__name__}: {exc}"
    names = [h.node for h in healths]
    failures = recent_failures(names)
    from_db = last_workflows([h.node for h in healths if not h.last_workflow])
    rows = []
    for health in healths:
        if health.last_workflow:
            last, source = health.last_workflow, "node"
        else:
            last, source = from_db.get(health.node, ""), "attempts"
        rows.append(NodeRow(health, last, source, failures.get(health.node, [])))
    return rows, ""


@dataclass
class FleetSummary:
    """The pool's own state: where it is kept, and what overflow to RunPod did today."""

    backend: str
    overflow_enabled: bool
    overflow_day: str = ""
    overflow_runs: int = 0
    overflow_running: int = 0
    overflow_gpu_seconds: float = 0.0
    overflow_budget: float = 0.0
    overflow_cost: float = 0.0


def fleet_summary() -> FleetSummary | None:
    """None unless the engine is the ComfyUI pool."""
    from django.conf import settings

    if settings.REKINDLE_ENGINE != "comfyui":
        return None
    from rekindle.engines.comfyui import get_pool

    pool = get_pool()
    today = pool.overflow_today()
    if today is None:
        return FleetSummary(backend=pool.scheduler.backend, overflow_enabled=False)
    return FleetSummary(
        backend=pool.scheduler.backend,
        overflow_enabled=True,
        overflow_day=today.day,
        overflow_runs=today.runs,
        overflow_running=today.running,
        overflow_gpu_seconds=today.gpu_seconds,
        overflow_budget=today.budget_gpu_seconds,
        overflow_cost=today.cost,
    )


def comfyui_nodes_view(request: HttpRequest) -> HttpResponse:
    _require_permission(request)
    from django.conf import settings

    rows, error = node_rows()
    context = {
        **_context(request, "Processing nodes"),
        "engine": settings.REKINDLE_ENGINE,
        "rows": rows,
        "error": error,
        "failure_days": RECENT_FAILURE_DAYS,
        "healthy_count": sum(1 for row in rows if row.health.healthy),
        "fleet": fleet_summary(),
        "can_drain": settings.REKINDLE_ENGINE == "comfyui" and request.user.has_perm(DRAIN_PERMISSION),
    }
    return TemplateResponse(request, "admin/rekindle/nodes.html", context)


@require_POST
def comfyui_node_drain_view(request: HttpRequest) -> HttpResponse:
    """Drain a node (``drain=1``) or put it back to work (``drain=0``), then back to the nodes page."""
    from django.conf import settings

    if not request.user.has_perm(DRAIN_PERMISSION) or settings.REKINDLE_ENGINE != "comfyui":
        raise PermissionDenied
    from rekindle.engines.comfyui import get_pool

    node = request.POST.get("node", "")
    draining = request.POST.get("drain") == "1"
    if not get_pool().set_draining(node, draining):
        messages.error(request, f"No configured node is {node!r}.")
    elif draining:
        logger.info("node.drain: %s drained by %s", node, request.user, extra={"event": "node.drain", "node": node})
        messages.success(request, f"{node} is draining: it takes no new prompts and finishes its own.")
    else:
        logger.info("node.resume: %s back to work by %s", node, request.user, extra={"event": "node.resume"})
        messages.success(request, f"{node} takes new prompts again.")
    return HttpResponseRedirect(reverse("rekindle-admin-nodes"))


urlpatterns: list[URLPattern] = [
    path("dashboard/", admin.site.admin_view(dashboard_view), name="rekindle-admin-dashboard"),
    path("comfyui-nodes/", admin.site.admin_view(comfyui_nodes_view), name="rekindle-admin-nodes"),
    path("comfyui-nodes/drain/", admin.site.admin_view(comfyui_node_drain_view), name="rekindle-admin-node-drain"),
]
