"""check_comfyui_nodes against stand-in ComfyUI nodes over HTTP, and against the local engine."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rekindle.engines.comfyui import pool as pool_module
from rekindle.management.commands.check_comfyui_nodes import Command
from rekindle.testing.comfyui_fixtures import StandinNode

WAN_HIGH_NOISE = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"


@pytest.fixture
def nodes(comfy_settings: list[StandinNode], monkeypatch: pytest.MonkeyPatch) -> list[StandinNode]:
    # A fresh pool, so no object_info cached by an earlier test hides this test's faults.
    monkeypatch.setattr(pool_module, "_pool", None)
    return comfy_settings


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("check_comfyui_nodes", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_reports_every_node_up_and_every_workflow_runnable(nodes: list[StandinNode]) -> None:
    out, _ = _run()
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"UP   {nodes[0].url}: queue 0, disk ")
    assert lines[1].startswith(f"UP   {nodes[1].url}: queue 0, disk ")
    assert lines[-1] == (
        "check_comfyui_nodes: comfyui engine, 2 of 2 node(s) healthy; "
        "every checked workflow can run (restore, animate_preview, animate_hd)"
    )


def test_it_passes_while_one_node_can_still_run_each_workflow(nodes: list[StandinNode]) -> None:
    nodes[0].set_faults(missing_models=[WAN_HIGH_NOISE])
    out, _ = _run()
    assert "  animate_hd: " in out
    assert WAN_HIGH_NOISE in out
    assert "every checked workflow can run" in out


def test_it_fails_when_no_healthy_node_can_run_a_workflow(nodes: list[StandinNode]) -> None:
    nodes[0].set_faults(missing_models=[WAN_HIGH_NOISE])
    nodes[1].kill()
    assert nodes[1].wait_dead()

    with pytest.raises(CommandError) as excinfo:
        _run()

    assert excinfo.value.returncode == 1
    message = str(excinfo.value)
    assert "1 of 2 node(s) healthy" in message
    # Both Wan 2.2 workflows need the missing model.
    assert "no node can run animate_preview, animate_hd" in message


def test_it_checks_only_the_workflows_asked_for(nodes: list[StandinNode]) -> None:
    nodes[0].set_faults(missing_classes=["ImageSharpen"])
    nodes[1].set_faults(missing_classes=["ImageSharpen"])
    out, _ = _run("--workflow", "animate_preview_cpu")
    assert "every checked workflow can run (animate_preview_cpu)" in out

    with pytest.raises(CommandError, match="no node can run restore_cpu"):
        _run("--workflow", "restore_cpu")
    with pytest.raises(CommandError, match=r"no node can run .*restore_cpu"):
        _run("--all")


def test_it_does_one_check_per_call(nodes: list[StandinNode]) -> None:
    command = Command(stdout=StringIO(), stderr=StringIO())
    command.setup()
    assert command.handle_one() is True
    assert command.failures == 0
    nodes[0].set_faults(missing_models=[WAN_HIGH_NOISE])
    nodes[1].set_faults(missing_models=[WAN_HIGH_NOISE])
    pool_module._pool = None
    assert command.handle_one() is True
    assert command.unrunnable == ["animate_preview", "animate_hd"]
    assert command.failures == 1


def test_it_checks_the_local_engine(settings: Any) -> None:
    settings.REKINDLE_ENGINE = "local"
    settings.REKINDLE_WORKFLOW_RESTORE = "restore_cpu"
    out, _ = _run()
    assert out.startswith("UP   local")
    assert "local engine, 1 of 1 node(s) healthy" in out


def test_it_refuses_an_unknown_workflow() -> None:
    with pytest.raises(CommandError, match="No workflow named 'nope'"):
        _run("--workflow", "nope")
