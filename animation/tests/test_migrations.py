"""The HD run's move from the animation's hd_ columns to an HDAttempt of its own keeps every run, and can go back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("animation", "0004_hd_attempt")]
AFTER = [("animation", "0006_remove_animationattempt_hd_fields")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    """Migrate the test database to ``targets``; the historical apps there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    leaves: list[tuple[str, str]] = MigrationExecutor(connection).loader.graph.leaf_nodes()
    return leaves


def test_it_carries_each_hd_run_over_and_back() -> None:
    try:
        old = _migrate(BEFORE)
        now = timezone.now()
        job = old.get_model("jobs", "Job").objects.create(
            email="a@example.com",
            token_hash="0" * 64,
            original_key="processed/x.jpg",
            original_format="jpeg",
            original_width=1,
            original_height=1,
            original_bytes=1,
            original_sha256="0" * 64,
        )
        restore = old.get_model("restoration", "RestoreAttempt").objects.create(
            job=job, workflow="restore", status="succeeded"
        )
        Animation = old.get_model("animation", "AnimationAttempt")
        never_paid = Animation.objects.create(job=job, restore=restore, workflow="animate_preview", status="succeeded")
        made = Animation.objects.create(
            job=job,
            restore=restore,
            workflow="animate_preview",
            parameters={"seed": 7, "prompt": "she smiles", "width": 480},
            status="succeeded",
            hd_paid=True,
            hd_status="succeeded",
            hd_progress=100,
            hd_result_key="animated/x/ts_result.mp4",
            hd_engine="comfyui",
            hd_node="http://gpu-1:8188",
            hd_prompt_id="p-1",
            hd_tries=2,
            hd_tries_at_requeue=1,
            hd_queued_at=now - timedelta(minutes=5),
            hd_started_at=now - timedelta(minutes=4),
            hd_finished_at=now,
            hd_notified_at=now,
        )
        failed = Animation.objects.create(
            job=job,
            restore=restore,
            workflow="animate_preview",
            status="succeeded",
            hd_paid=True,
            hd_status="failed",
            hd_tries=3,
            hd_queued_at=now,
            hd_error_type="timeout",
            hd_error_message="The run did not finish in time.",
            hd_error_details={"node": "http://gpu-2:8188"},
        )

        new = _migrate(AFTER)

        HDAttempt = new.get_model("animation", "HDAttempt")
        assert HDAttempt.objects.count() == 2
        assert not HDAttempt.objects.filter(animation_id=never_paid.pk).exists()
        run = HDAttempt.objects.get(animation_id=made.pk)
        assert run.job_id == job.pk
        assert (run.status, run.progress, run.result_key, run.node, run.prompt_id) == (
            "succeeded",
            100,
            "animated/x/ts_result.mp4",
            "http://gpu-1:8188",
            "p-1",
        )
        assert (run.tries, run.tries_at_requeue, run.notified_at) == (2, 1, now)
        assert (run.queued_at, run.started_at, run.finished_at) == (
            now - timedelta(minutes=5),
            now - timedelta(minutes=4),
            now,
        )
        # The preview's creative choices carry over; its size is the preview's own.
        assert run.parameters == {"seed": 7, "prompt": "she smiles"}
        broken = HDAttempt.objects.get(animation_id=failed.pk)
        assert (broken.status, broken.tries, broken.error_type) == ("failed", 3, "timeout")
        assert broken.error_details == {"node": "http://gpu-2:8188"}
        assert new.get_model("animation", "AnimationAttempt").objects.get(pk=made.pk).hd_paid

        back = _migrate(BEFORE)

        again = back.get_model("animation", "AnimationAttempt").objects.get(pk=made.pk)
        assert (again.hd_status, again.hd_result_key, again.hd_tries, again.hd_node) == (
            "succeeded",
            "animated/x/ts_result.mp4",
            2,
            "http://gpu-1:8188",
        )
    finally:
        _migrate(_latest())
