"""Every way a ComfyUI run can go wrong, over real HTTP and websockets against stand-in nodes: each ends correctly."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from rekindle.engines.base import (
    EngineCanceled,
    EngineResult,
    PermanentEngineError,
    RunHooks,
    TransientEngineError,
)
from rekindle.engines.comfyui.client import ComfyNodeClient
from rekindle.engines.comfyui.pool import ComfyNodePool
from rekindle.engines.comfyui.prompt import Progress, RunContext, resume_earlier_prompt
from rekindle.engines.comfyui.scheduler import Slot
from rekindle.testing.comfyui_fixtures import (
    StandinNode,
    graph_builder,
    overlapping_prompts,
    prompt_spans,
    sample_input,
    test_pool_config,
)

pytestmark = pytest.mark.timeout(90)

PoolMaker = Callable[..., tuple[ComfyNodePool, list[StandinNode]]]


def run(pool: ComfyNodePool, graph: str = "restore_flux", *, timeout: float = 30.0, **kwargs: Any) -> EngineResult:
    return pool.run_graph(
        graph_builder(graph),
        workflow_name=graph,
        run_id=f"run-{time.monotonic_ns()}",
        images=[sample_input()],
        timeout=timeout,
        **kwargs,
    )


def test_it_finishes_on_another_node_when_its_node_crashes_mid_run(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(crash=1)

    result = run(pool)

    assert first.wait_dead(), "the stand-in should have exited mid-run"
    assert result.node == second.url
    assert result.first("image").data.startswith(b"\x89PNG")
    assert second.counters()["prompts"] == 1
    assert not pool.scheduler.view(first.url).up
    assert [span.how for span in prompt_spans(first)] == ["crashed"]
    assert overlapping_prompts([first, second]) == []


def test_it_skips_a_node_that_refuses_connections(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.kill()

    result = run(pool)

    assert result.node == second.url
    assert pool.scheduler.view(first.url).last_error


def test_it_fails_transiently_when_no_node_answers_within_the_outage_wait(comfy_pool: PoolMaker) -> None:
    pool, nodes = comfy_pool(2, outage_wait_seconds=1.0)
    for node in nodes:
        node.kill()
    waiting: list[str] = []

    with pytest.raises(TransientEngineError) as caught:
        run(pool, hooks=RunHooks(waiting=waiting.append))

    assert caught.value.code == "nodes_unavailable"
    assert caught.value.details["waited_seconds"] >= 1.0
    assert waiting == ["node"]


def test_it_reads_the_result_from_history_when_the_socket_drops(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(drop_socket=1, sampler_seconds=0.5)

    result = run(pool)

    assert result.first("image").data.startswith(b"\x89PNG")
    counters = node.counters()
    assert counters["fault_drop_socket"] == 1
    assert counters["prompts"] == 1  # followed through history, not sent again


def test_it_polls_history_when_the_socket_goes_quiet(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, socket_quiet_seconds=0.5)
    node.set_faults(silent_socket=1, sampler_seconds=1.5)
    progress: list[int] = []

    result = run(pool, on_progress=progress.append)

    assert result.first("image").content_type == "image/png"
    assert node.counters()["prompts"] == 1
    assert progress[-1] == 100


def test_it_sends_the_run_again_when_the_node_restarts_and_forgets_it(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(restart=1)

    result = run(pool)

    counters = node.counters()
    assert counters["restarts"] == 1
    assert counters["prompts"] == 2
    assert result.first("image").data.startswith(b"\x89PNG")


def test_it_moves_a_run_lost_in_a_restart_to_another_node(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(restart=1)

    result = run(pool)

    assert result.node == second.url
    assert first.counters()["restarts"] == 1
    assert [span.how for span in prompt_spans(first)] == ["forgotten"]
    assert overlapping_prompts([first, second]) == []


def test_it_fails_permanently_with_the_node_errors_when_the_prompt_is_rejected(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)

    with pytest.raises(PermanentEngineError) as caught:
        pool.run_graph(
            graph_builder("restore_twin", megapixels=99.0),
            workflow_name="restore_twin",
            run_id="rejected",
            images=[sample_input()],
            timeout=30,
        )

    error = caught.value
    assert error.code == "prompt_rejected"
    assert "node 2 (ImageScaleToTotalPixels): Value 99.0 bigger than max of 16.0: megapixels" in error.message
    assert error.details["node_errors"]["2"]["errors"][0]["type"] == "value_bigger_than_max"
    assert node.counters()["rejected"] == 1


def test_it_fails_permanently_on_an_execution_error(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(execution_error=1)

    with pytest.raises(PermanentEngineError) as caught:
        run(pool)

    assert caught.value.code == "execution_failed"
    assert "RuntimeError: Injected failure" in caught.value.message
    assert caught.value.details["node_type"]
    assert node.counters().get("frees", 0) == 0


def test_a_paid_run_tries_another_node_once_after_an_execution_error(comfy_pool: PoolMaker) -> None:
    pool, nodes = comfy_pool(2)
    warm = run(pool)  # the workflow is loaded there, so the next run goes there first
    first = next(node for node in nodes if node.url == warm.node)
    other = next(node for node in nodes if node is not first)
    first.set_faults(execution_error=1)

    result = run(pool, priority="paid")

    assert first.counters()["errors"] == 1
    assert result.node == other.url
    assert result.first("image").data.startswith(b"\x89PNG")
    assert pool.scheduler.view(first.url).up  # an execution error says nothing of the node's health
    assert overlapping_prompts(nodes) == []


def test_a_paid_run_goes_back_to_the_queue_once_two_nodes_failed_it_and_a_free_one_fails_at_once(
    comfy_pool: PoolMaker,
) -> None:
    pool, nodes = comfy_pool(3)
    for node in nodes:
        node.set_faults(execution_error=-1)

    with pytest.raises(TransientEngineError) as paid:
        run(pool, priority="paid")
    assert sorted(node.counters().get("errors", 0) for node in nodes) == [0, 1, 1]
    with pytest.raises(PermanentEngineError) as free:
        run(pool)

    assert paid.value.code == free.value.code == "execution_failed"
    assert "RuntimeError: Injected failure" in paid.value.message
    assert paid.value.details["nodes_failed"] == 2
    first = min((node for node in nodes if prompt_spans(node)), key=lambda node: prompt_spans(node)[0].start)
    assert paid.value.details["node"] == first.url  # the first node's error is the one kept
    assert sum(node.counters().get("errors", 0) for node in nodes) == 3


def test_a_paid_run_with_no_other_node_goes_back_to_the_queue(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(execution_error=1)

    with pytest.raises(TransientEngineError) as caught:
        run(pool, priority="paid")

    assert caught.value.code == "execution_failed"
    assert caught.value.details["nodes_failed"] == 1
    assert node.counters()["errors"] == 1
    assert run(pool, priority="paid").node == node.url  # the next try


def _earlier_prompt(pool: ComfyNodePool, node: StandinNode) -> str:
    """A prompt on ``node`` as a try whose worker died left it: sent, and followed by nobody."""
    client = pool.scheduler.client(node.url)
    image = sample_input()
    name = client.upload_image(f"earlier-{time.monotonic_ns()}.jpg", image.data, "image/jpeg")
    prompt_id = str(uuid.uuid4())
    client.submit(graph_builder("restore_flux")({"image": name}), prompt_id=prompt_id, client_id="rekindle-tests")
    return prompt_id


def _resume(pool: ComfyNodePool, node: StandinNode, prompt_id: str) -> EngineResult | None:
    context = RunContext(
        run_id="resumed-run2",
        deadline=time.monotonic() + 30,
        progress=Progress(None),
        should_cancel=None,
        on_submitted=None,
        client_name="rekindle-tests",
        timeout=30,
    )
    slot = Slot(url=node.url, client=pool.scheduler.client(node.url))
    return resume_earlier_prompt(slot, pool.scheduler, pool.config, context, prompt_id)


def test_the_earlier_prompt_on_a_slow_node_is_followed_to_its_end_not_given_up_at_the_first_timeout(
    comfy_pool: PoolMaker,
) -> None:
    pool, (node,) = comfy_pool(1, probe_timeout=1.0)
    node.set_faults(sampler_seconds=1.5)
    prompt_id = _earlier_prompt(pool, node)
    node.set_http_fault("GET /history/*", status=200, times=1, after=True, delay=1.5)  # one read times out

    result = _resume(pool, node, prompt_id)

    assert result is not None
    assert result.prompt_id == prompt_id
    assert node.counters()["prompts"] == 1


def test_an_earlier_prompt_a_node_does_not_confirm_stopped_is_not_run_again_elsewhere(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, probe_timeout=0.5, poll_failures=2, stop_confirm_seconds=1.0)
    node.set_faults(sampler_seconds=10)
    prompt_id = _earlier_prompt(pool, node)
    # The node answers nothing about its history and keeps the prompt in its queue.
    node.set_http_fault("GET /history/*", status=200, times=-1, after=True, delay=1.0)
    node.set_http_fault("POST /interrupt", status=500, times=-1)
    node.set_http_fault("POST /queue", status=500, times=-1)

    with pytest.raises(TransientEngineError) as caught:
        _resume(pool, node, prompt_id)

    assert caught.value.code == "stop_unconfirmed"
    assert node.counters()["prompts"] == 1


def test_it_frees_memory_and_fails_transiently_when_the_gpu_runs_out(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(oom=1)

    with pytest.raises(TransientEngineError) as caught:
        run(pool)

    assert caught.value.code == "out_of_memory"
    assert caught.value.details["exception_type"] == "torch.OutOfMemoryError"
    assert node.counters()["frees"] == 1
    # The retry then succeeds on the freed node.
    assert run(pool).first("image")


def test_it_interrupts_and_cancels_when_asked_to_stop(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(sampler_seconds=20)
    submitted = threading.Event()

    with pytest.raises(EngineCanceled) as caught:
        run(pool, on_submitted=lambda _node, _prompt: submitted.set(), should_cancel=submitted.is_set)

    assert caught.value.code == "canceled"
    counters = node.counters()
    assert counters["interrupts"] == 1
    assert counters["queue_deletes"] == 1
    # The run returned once the node confirmed the prompt had stopped.
    assert counters["interrupted"] == 1, "the prompt should stop on the node too"
    assert [span.how for span in prompt_spans(node)] == ["interrupted"]


def test_it_fails_a_run_that_outlasts_its_own_limit_at_once_and_interrupts_the_prompt(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(sampler_seconds=20)
    used: list[tuple[str, float]] = []

    started = time.monotonic()
    with pytest.raises(PermanentEngineError) as caught:
        run(pool, timeout=1.0, hooks=RunHooks(usage=lambda node, seconds: used.append((node, seconds))))

    # It executed all its time: another try would hit the same limit and spend the GPU time again.
    assert caught.value.code == "timeout"
    assert caught.value.details["deterministic"] is True
    assert time.monotonic() - started < 10
    assert node.counters()["interrupts"] == 1
    # Confirmed gone before the error came back: a retry elsewhere cannot overlap it.
    assert [span.how for span in prompt_spans(node)] == ["interrupted"]
    assert caught.value.details["stopped"] == "stopped"
    # The GPU time of the try that failed is counted too.
    assert [url for url, _ in used] == [node.url]
    assert used[0][1] > 0.5


def test_it_times_out_transiently_when_the_time_went_waiting_in_the_nodes_queue(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, queue_fresh_seconds=0.0)
    node.set_faults(sampler_seconds=20)
    # A foreign prompt runs first; ours waits behind it until the run's time is up.
    foreign = ComfyNodeClient(node.url)
    name = foreign.upload_image("foreign.png", sample_input().data, "image/png")
    foreign.submit(graph_builder("restore_flux")({"image": name}), prompt_id="foreign-1", client_id="someone-else")

    with pytest.raises(TransientEngineError) as caught:
        run(pool, timeout=1.0)

    assert caught.value.code == "timeout"
    assert caught.value.details["executed_seconds"] == 0
    foreign.stop_prompt("foreign-1")


def test_it_reports_a_cancel_from_another_process_as_canceled(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(sampler_seconds=20)
    admin_pool = ComfyNodePool(test_pool_config([node]))

    def cancel_from_elsewhere(node_url: str, prompt_id: str) -> None:
        threading.Timer(0.3, admin_pool.cancel, args=(node_url, prompt_id)).start()

    with pytest.raises(EngineCanceled) as caught:
        run(pool, on_submitted=cancel_from_elsewhere)

    assert caught.value.code == "interrupted"
    assert node.counters()["interrupts"] == 1


def test_it_sends_the_run_to_a_node_that_has_the_models(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(missing_models=["flux1-dev-kontext_fp8_scaled.safetensors"])

    result = run(pool)

    assert result.node == second.url
    assert first.counters().get("prompts", 0) == 0
    assert pool.scheduler.view(first.url).preflight["restore_flux"] == [
        "node 37 (UNETLoader): unet_name 'flux1-dev-kontext_fp8_scaled.safetensors' is not available on this node"
    ]


def test_it_fails_fast_naming_the_missing_model_and_node_when_no_node_has_it(comfy_pool: PoolMaker) -> None:
    pool, nodes = comfy_pool(2)
    for node in nodes:
        node.set_faults(missing_models=["ae.safetensors"])

    with pytest.raises(PermanentEngineError) as caught:
        run(pool)

    error = caught.value
    assert error.code == "preflight_failed"
    for node in nodes:
        assert node.url in error.message
        assert node.counters().get("prompts", 0) == 0
    assert "vae_name 'ae.safetensors' is not available" in error.message
    assert set(error.details["nodes"]) == {node.url for node in nodes}


def test_it_fails_fast_naming_a_missing_node_class(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(missing_classes=["WanImageToVideo"])

    with pytest.raises(PermanentEngineError) as caught:
        run(pool, "animate_wan")

    assert "node class WanImageToVideo is not installed" in caught.value.message
    assert node.url in caught.value.message


def test_it_checks_again_with_fresh_object_info_when_a_model_appears(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(missing_models=["ae.safetensors"])
    with pytest.raises(PermanentEngineError):
        run(pool)

    node.set_faults(missing_models=[])

    assert run(pool).first("image")
