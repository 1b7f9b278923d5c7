"""The staff console's own pages: the dashboard (figures and charts) and the processing nodes page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from animation.models import AnimationAttempt, HDAttempt
from jobs.models import Job
from rekindle.dashboard import dashboard_stats
from rekindle.engines.comfyui import pool as pool_module
from rekindle.testing.comfyui_fixtures import StandinNode
from rekindle.testing.factories import JobFactory
from restoration.models import RestoreAttempt

pytestmark = pytest.mark.django_db

XSS = '<img src=x onerror="alert(1)">'
NOW = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.get_current_timezone())


def _job() -> Job:
    return JobFactory.create()


def _restore(job: Job, *, status: str, queued: datetime, seconds: float | None = None, **fields: Any) -> RestoreAttempt:
    started = queued + timedelta(seconds=1) if seconds is not None else None
    finished = started + timedelta(seconds=seconds) if started is not None and seconds is not None else None
    return RestoreAttempt.objects.create(
        job=job,
        workflow=fields.pop("workflow", "restore_cpu"),
        status=status,
        queued_at=queued,
        started_at=started,
        finished_at=finished,
        **fields,
    )


@pytest.fixture
def staff_client(client: Client) -> Client:
    user = User.objects.create_user("support", "support@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_restoreattempt"))
    client.force_login(user)
    return client


def test_it_counts_runs_per_day_by_status_with_the_failure_rate() -> None:
    job = _job()
    today, yesterday = NOW - timedelta(hours=1), NOW - timedelta(days=1)
    for status in ("succeeded", "succeeded", "failed"):
        _restore(job, status=status, queued=today, seconds=2)
    _restore(job, status="failed", queued=yesterday, seconds=2)
    _restore(job, status="queued", queued=yesterday)
    _restore(job, status="succeeded", queued=NOW - timedelta(days=20), seconds=2)  # outside the window
    restore = RestoreAttempt.objects.filter(status="succeeded").first()
    assert restore is not None
    animation = AnimationAttempt.objects.create(
        job=job, restore=restore, workflow="animate_preview_cpu", status="succeeded", queued_at=today
    )
    HDAttempt.objects.create(job=job, animation=animation, workflow="animate_hd_cpu", status="failed", queued_at=today)

    stats = dashboard_stats(days=14, now=NOW)

    assert len(stats.days) == 14
    assert stats.days[-1] == NOW.date()
    assert stats.per_day["succeeded"][-1] == 3  # two restores and the animation preview
    assert stats.per_day["failed"][-1] == 2  # a restore and the HD run
    assert stats.per_day["failed"][-2] == 1
    assert stats.per_day["queued"][-2] == 1
    assert sum(stats.per_day["succeeded"]) == 3
    assert stats.failure_rate[-1] == pytest.approx(40.0)
    assert stats.failure_rate[-2] == pytest.approx(100.0)
    assert stats.total_runs == 7
    assert stats.overall_failure_rate == pytest.approx(50.0)


def test_it_computes_median_and_p95_per_workflow_and_node_time() -> None:
    job = _job()
    for seconds in (1, 2, 3, 4, 5):
        _restore(job, status="succeeded", queued=NOW - timedelta(hours=2), seconds=seconds, node="http://gpu-a:8188")
    # A failed run used the node too, but says nothing about how long a restore takes.
    _restore(job, status="failed", queued=NOW - timedelta(hours=2), seconds=100, node="http://gpu-b:8188")

    stats = dashboard_stats(days=14, now=NOW)

    [durations] = stats.durations
    assert durations.workflow == "restore_cpu"
    assert durations.runs == 5
    assert durations.median_seconds == pytest.approx(3.0)
    assert durations.p95_seconds == pytest.approx(4.8)
    assert [node for node, _ in stats.node_seconds] == ["http://gpu-b:8188", "http://gpu-a:8188"]
    assert [seconds for _, seconds in stats.node_seconds] == pytest.approx([100.0, 15.0])


def test_it_shows_the_dashboard_with_charts_to_staff(staff_client: Client) -> None:
    job = _job()
    _restore(job, status="succeeded", queued=timezone.now() - timedelta(minutes=5), seconds=3, node=XSS, workflow=XSS)
    _restore(job, status="failed", queued=timezone.now() - timedelta(minutes=5), seconds=1, node="http://gpu-a:8188")

    response = staff_client.get(reverse("rekindle-admin-dashboard"))

    assert response.status_code == 200
    body = response.content.decode()
    assert body.count('<svg class="rk-chart"') == 5  # with the previews and HD bought; no revenue yet
    assert "Runs per day by status" in body
    assert "http://gpu-a:8188" in body
    # Workflow and node names are not ours to trust: escaped in the charts and the tables.
    assert XSS not in body
    assert "&lt;img src=x onerror=" in body


def test_it_links_the_console_pages_from_the_admin_index(staff_client: Client) -> None:
    response = staff_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert reverse("rekindle-admin-dashboard") in response.content.decode()
    assert reverse("rekindle-admin-nodes") in response.content.decode()


@pytest.mark.parametrize("name", ["rekindle-admin-dashboard", "rekindle-admin-nodes"])
def test_it_sends_anonymous_and_non_staff_users_to_the_login_page(client: Client, name: str) -> None:
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    client.force_login(User.objects.create_user("customer", "c@example.com", "pw"))
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("name", ["rekindle-admin-dashboard", "rekindle-admin-nodes"])
def test_it_refuses_staff_without_the_permission_to_view_attempts(client: Client, name: str) -> None:
    client.force_login(User.objects.create_user("intern", "i@example.com", "pw", is_staff=True))
    assert client.get(reverse(name)).status_code == 403


WAN_HIGH_NOISE = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"


def test_it_shows_each_nodes_health_preflight_and_recent_failures(
    staff_client: Client, comfy_settings: list[StandinNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "_pool", None)
    up, down = comfy_settings
    up.set_faults(missing_models=[WAN_HIGH_NOISE])
    down.kill()
    assert down.wait_dead()
    job = _job()
    recent = timezone.now() - timedelta(hours=1)
    failure = _restore(
        job,
        status="failed",
        queued=recent,
        seconds=3,
        node=up.url,
        workflow="restore",
        error_type="execution_failed",
        error_message="KSampler: " + XSS,
    )
    _restore(
        job,
        status="failed",
        queued=timezone.now() - timedelta(days=30),
        seconds=3,
        node=up.url,
        error_message="too old to show",
    )

    response = staff_client.get(reverse("rekindle-admin-nodes"))

    assert response.status_code == 200
    body = response.content.decode()
    assert "1 of 2 nodes healthy" in body
    assert f"<code>{up.url}</code>" in body
    assert f"<code>{down.url}</code>" in body
    assert '<span class="rk-status rk-status-failed">down</span>' in body
    # The preflight of each workflow on the healthy node: the Wan model is missing there.
    assert WAN_HIGH_NOISE in body
    assert "restore_cpu" in body
    assert "can run" in body
    # Recent failures come from the attempts table, escaped, linked to the attempt.
    assert reverse("admin:restoration_restoreattempt_change", args=[failure.pk]) in body
    assert "KSampler: &lt;img src=x onerror=" in body
    assert XSS not in body
    assert "too old to show" not in body
    assert "(last attempt recorded here)" in body


def test_it_shows_the_local_engine_as_one_node(staff_client: Client, settings: Any) -> None:
    settings.REKINDLE_ENGINE = "local"
    response = staff_client.get(reverse("rekindle-admin-nodes"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Engine: <strong>local</strong>" in body
    assert "<code>local</code>" in body
    assert "1 of 1 node healthy" in body
