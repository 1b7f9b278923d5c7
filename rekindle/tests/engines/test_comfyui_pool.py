"""The ComfyUI pool end to end on stand-in nodes: outputs, progress, node choice, slots, backoff, health."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import pytest
import requests
from PIL import Image

from rekindle.engines import get_engine
from rekindle.engines.base import EngineCanceled, EngineResult, PermanentEngineError, RunRequest, TransientEngineError
from rekindle.engines.comfyui.pool import ComfyNodePool
from rekindle.engines.comfyui.scheduler import NodeSnapshot, NoNodeAvailable, rank_nodes
from rekindle.testing.comfyui_fixtures import (
    StandinNode,
    fixture_graph,
    graph_builder,
    prompt_spans,
    sample_input,
    who_takes_a_node_another_run_waits_for,
)
from rekindle.testing.pipeline import wait_for
from rekindle.workflows import get_workflow

pytestmark = pytest.mark.timeout(90)

PoolMaker = Callable[..., tuple[ComfyNodePool, list[StandinNode]]]


def run(pool: ComfyNodePool, graph: str = "restore_flux", **kwargs: Any) -> EngineResult:
    return pool.run_graph(
        graph_builder(graph),
        workflow_name=kwargs.pop("workflow_name", graph),
        run_id=kwargs.pop("run_id", f"run-{time.monotonic_ns()}"),
        images=[sample_input()],
        timeout=kwargs.pop("timeout", 30.0),
        **kwargs,
    )


def test_it_returns_the_saved_image_with_progress_to_100(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    progress: list[int] = []
    submitted: list[tuple[str, str]] = []

    result = run(pool, run_id="attempt-7.1", on_progress=progress.append, on_submitted=lambda *a: submitted.append(a))

    output = result.first("image")
    assert output.content_type == "image/png"
    assert Image.open(io.BytesIO(output.data)).size == (264, 198)  # 0.05 MP of the 640x480 input
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert progress[-1] == 100
    assert len(progress) > 5  # the sampler's steps move the bar too
    assert submitted == [(node.url, result.prompt_id)]
    assert result.engine == "comfyui"
    assert result.execution_seconds is not None
    # Our own prompt id, and the input uploaded under a name unique to the run.
    assert result.prompt_id in node.state()["history"]
    queue_item = requests.get(f"{node.url}/history/{result.prompt_id}", timeout=5).json()[result.prompt_id]
    assert queue_item["prompt"][2]["190"]["inputs"]["image"] == "attempt-7_1_image.jpg"
    assert queue_item["prompt"][3]["client_id"].startswith("rekindle-tests-")


def test_it_returns_a_video_from_the_animation_graph(comfy_pool: PoolMaker) -> None:
    pool, _ = comfy_pool(1)

    result = run(pool, "animate_wan")

    video = result.first("video")
    assert video.content_type == "video/mp4"
    with av.open(io.BytesIO(video.data), mode="r") as container:
        stream = container.streams.video[0]
        frames = len(list(container.decode(stream)))
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (128, 96)
    assert frames == 9


def test_it_runs_the_projects_cpu_twin_workflows_through_get_engine(comfy_settings: list[StandinNode]) -> None:
    engine = get_engine("comfyui")
    photo = sample_input()

    restored = engine.run(
        RunRequest(
            workflow="restore_cpu",
            run_id="twin-restore",
            images=(photo,),
            params=get_workflow("restore_cpu").validate({"megapixels": 0.25}),
        )
    )
    animated = engine.run(
        RunRequest(
            workflow="animate_preview_cpu",
            run_id="twin-animate",
            images=(photo,),
            params=get_workflow("animate_preview_cpu").validate({}),
        )
    )

    image = Image.open(io.BytesIO(restored.first("image").data))
    assert abs(image.width * image.height - 0.25 * 1024 * 1024) < 0.02 * 1024 * 1024
    assert animated.first("video").content_type in ("video/mp4", "image/webp")
    assert {restored.node, animated.node} <= {node.url for node in comfy_settings}


def test_it_prefers_the_node_that_last_ran_the_same_workflow(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    for node in (first, second):
        node.set_faults(switch_seconds=0.3, sampler_seconds=0.05)

    placed = [run(pool, graph).node for graph in ("restore_flux", "animate_wan", "restore_flux", "animate_wan")]

    assert placed == [first.url, second.url, first.url, second.url]
    assert first.counters().get("model_switches", 0) == 0
    assert second.counters().get("model_switches", 0) == 0


def test_it_prefers_the_node_with_the_least_queued_work(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(sampler_seconds=5)
    foreign = fixture_graph("restore_flux")
    requests.post(f"{first.url}/upload/image", files={"image": ("input.png", sample_input().data)}, timeout=5)
    for node in foreign.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "input.png"
    for _ in range(2):
        response = requests.post(
            f"{first.url}/prompt", json={"prompt": foreign, "client_id": "someone-else"}, timeout=5
        )
        assert response.status_code == 200
    pool.health([])  # reads each node's queue

    assert pool.scheduler.view(first.url).foreign_queue == 2
    assert run(pool).node == second.url
    requests.post(f"{first.url}/queue", json={"clear": True}, timeout=5)
    requests.post(f"{first.url}/interrupt", timeout=5)


def test_it_keeps_to_one_prompt_per_node_and_waits_for_a_free_slot(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    results: list[EngineResult] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(run(pool))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(results) == 6
    assert first.counters()["prompts"] + second.counters()["prompts"] == 6
    assert first.counters()["max_queue"] == 1
    assert second.counters()["max_queue"] == 1


def test_it_allows_more_prompts_per_node_when_configured(comfy_pool: PoolMaker) -> None:
    pool, _ = comfy_pool(1, prompts_per_node=2, slot_wait_seconds=0.3)

    one = pool.scheduler.acquire("restore")
    two = pool.scheduler.acquire("restore")
    with pytest.raises(NoNodeAvailable):
        pool.scheduler.acquire("restore")

    assert one.url == two.url
    assert pool.scheduler.view(one.url).inflight == 2


def test_it_probes_a_down_node_again_with_growing_backoff(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2, node_backoff_seconds=0.3, node_backoff_max_seconds=5.0)
    first.kill()
    assert run(pool).node == second.url
    assert pool.scheduler.view(first.url).failures == 1

    time.sleep(0.35)
    pool.scheduler.release(pool.scheduler.acquire("restore_flux"))  # the probe fails: still dead
    state = pool.scheduler.view(first.url)
    assert state.failures == 2
    assert not state.up
    assert state.down_for > 0.4  # doubled

    first.start()
    time.sleep(0.65)
    pool.scheduler.release(pool.scheduler.acquire("restore_flux"))
    state = pool.scheduler.view(first.url)
    assert state.up
    assert state.failures == 0


def test_it_reports_health_with_each_workflows_preflight(comfy_pool: PoolMaker) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(missing_models=["wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"])
    second.kill()

    report = {health.node: health for health in pool.health(["restore", "animate_hd", "restore_cpu"])}

    assert report[first.url].healthy
    assert report[first.url].preflight["restore"] == []
    assert report[first.url].preflight["restore_cpu"] == []
    assert any(
        "wan2.2_i2v_low_noise_14B_fp8_scaled" in problem for problem in report[first.url].preflight["animate_hd"]
    )
    assert not report[second.url].healthy
    assert report[second.url].detail


def test_it_waits_for_a_busy_node_with_the_models_loaded_rather_than_switching(comfy_pool: PoolMaker) -> None:
    pool, _ = comfy_pool(2, affinity_wait_seconds=5.0)
    scheduler = pool.scheduler
    loaded = scheduler.acquire("restore")
    scheduler.release(loaded)
    other = scheduler.acquire("animate")
    assert other.url != loaded.url
    scheduler.release(other)
    busy = scheduler.acquire("restore")
    assert busy.url == loaded.url

    chosen: list[Any] = []
    waiter = threading.Thread(target=lambda: chosen.append(scheduler.acquire("restore").url))
    waiter.start()
    time.sleep(0.5)
    assert chosen == []  # the free node would have to switch models
    scheduler.release(busy)
    waiter.join(5)

    assert chosen == [loaded.url]


def test_a_run_leaves_a_free_node_to_a_waiting_run_that_has_its_models_loaded_there(comfy_pool: PoolMaker) -> None:
    pool, _ = comfy_pool(2, affinity_wait_seconds=1.0)

    restore_node, animate_node, animate_took, restore_took = who_takes_a_node_another_run_waits_for(
        pool.scheduler, pool.scheduler, 1.0
    )

    # The animate run was first in line and past its affinity wait; switching the restore node would
    # have cost a model load there, and another for the restore run on the animate node.
    assert (animate_took, restore_took) == (animate_node, restore_node)


def test_a_run_takes_a_node_another_run_waits_for_once_it_waited_three_affinity_waits() -> None:
    nodes = [
        NodeSnapshot("http://a", up=True, draining=False, busy_until=0.0, ours=0, foreign=0, last_workflow="restore"),
        NodeSnapshot("http://b", up=True, draining=False, busy_until=0.0, ours=1, foreign=0, last_workflow="x"),
    ]

    def rank(waited: float, wanted: dict[str, int] | None) -> list[str] | None:
        return rank_nodes("animate", nodes, limit=1, avoid=(), waited=waited, affinity_wait=1.0, now=1.0, wanted=wanted)

    assert rank(1.5, {"restore": 1}) is None
    assert rank(3.0, {"restore": 1}) == ["http://a"]
    assert rank(1.5, {"animate": 2}) == ["http://a"]
    assert rank(1.5, None) == ["http://a"]


def test_it_gives_up_transiently_when_no_slot_frees_in_time(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, slot_wait_seconds=0.3)
    held = pool.scheduler.acquire("restore_flux")
    try:
        with pytest.raises(TransientEngineError) as caught:
            run(pool)
    finally:
        pool.scheduler.release(held)

    assert caught.value.code == "nodes_busy"
    assert node.counters().get("prompts", 0) == 0


def test_it_stops_waiting_for_a_free_node_when_canceled(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1, slot_wait_seconds=30)
    held = pool.scheduler.acquire("restore_flux")
    asked = time.monotonic() + 0.3
    try:
        with pytest.raises(EngineCanceled):
            run(pool, should_cancel=lambda: time.monotonic() > asked)
    finally:
        pool.scheduler.release(held)

    assert node.counters().get("prompts", 0) == 0


def test_it_runs_the_production_workflows_on_the_stand_in(comfy_settings: list[StandinNode]) -> None:
    engine = get_engine("comfyui")
    photo = sample_input()
    restore, animate = get_workflow("restore"), get_workflow("animate_preview")

    restored = engine.run(
        RunRequest("restore", "prod-restore", (photo,), restore.validate({"steps": 4, "megapixels": 0.25}))
    )
    animated = engine.run(
        RunRequest(
            "animate_preview",
            "prod-animate",
            (photo,),
            animate.validate({"seconds": 1.0, "fps": 8, "width": 256, "height": 256}),
        )
    )

    assert restored.first("image").content_type == "image/png"
    with av.open(io.BytesIO(animated.first("video").data), mode="r") as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (256, 256)
        assert len(list(container.decode(stream))) == 9  # 1 s x 8 fps + 1, as 4k+1


def test_it_applies_the_timeout_setting_of_the_workflows_kind(comfy_settings: list[StandinNode], settings: Any) -> None:
    settings.COMFYUI_TIMEOUTS = {"restore": 1.0, "animate_preview": 0.0, "animate_hd": 0.0}
    for node in comfy_settings:
        node.set_faults(sampler_seconds=30)
    restore = get_workflow("restore")

    started = time.monotonic()
    with pytest.raises(PermanentEngineError) as caught:
        get_engine("comfyui").run(RunRequest("restore", "slow", (sample_input(),), restore.validate({})))

    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 10


def test_a_run_hands_its_node_to_the_next_run_while_it_still_fetches_its_outputs(comfy_pool: PoolMaker) -> None:
    pool, (node,) = comfy_pool(1)
    # The first output download is slow (a large video over a slow link).
    node.set_http_fault("GET /view", status=0, delay=2.0)
    first: list[float] = []

    def run_first() -> None:
        run(pool, run_id="first")
        first.append(time.time())

    thread = threading.Thread(target=run_first)
    thread.start()
    wait_for(lambda: any(span.run == "first" for span in prompt_spans(node)), timeout=20)
    second = run(pool, run_id="second")
    thread.join(timeout=30)

    spans = {span.run: span for span in prompt_spans(node)}
    assert second.node == node.url
    # The second prompt reached the node while the first run was still downloading its output,
    assert spans["second"].start < first[0] - 1.0
    # and never while the first prompt was on the node.
    assert spans["second"].start >= spans["first"].end
