"""The fleet's shared state in Redis: slots as leases, warm routing across processes, priorities, overflow, drain,
Redis lost mid-run, hung and absent nodes, node files; real Redis, real stand-in processes, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.db import OperationalError

from rekindle.engines.base import EngineResult, RunHooks, RunRequest
from rekindle.engines.comfyui.client import ComfyNodeClient
from rekindle.engines.comfyui.config import OverflowConfig
from rekindle.engines.comfyui.fleet import RedisNodeScheduler
from rekindle.engines.comfyui.overflow import OverflowBudget
from rekindle.engines.comfyui.pool import ComfyNodePool, Overflow
from rekindle.engines.comfyui.scheduler import NoNodeAvailable
from rekindle.engines.runpod import RunPodEngine
from rekindle.testing.comfyui_fixtures import (
    REPO_ROOT,
    StandinNode,
    graph_builder,
    prompt_spans,
    sample_input,
    test_pool_config,
    who_takes_a_node_another_run_waits_for,
)
from rekindle.testing.pipeline import RedisServer, wait_for
from rekindle.testing.runpod_standin import RunPodStandin
from rekindle.testing.services import REDIS_URL
from rekindle.workflows import get_workflow

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

Standins = Callable[[int], list[StandinNode]]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"rekindle-fleet-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def fleet(namespace: str) -> Iterator[Callable[..., ComfyNodePool]]:
    """``fleet(nodes, **config)``: a pool whose node state is in Redis under this test's namespace."""
    made: list[RedisNodeScheduler] = []

    def make(
        nodes: list[StandinNode], *, redis_url: str = REDIS_URL, overflow: Overflow | None = None, **overrides: Any
    ) -> ComfyNodePool:
        config = test_pool_config(
            nodes, fleet_state="redis", redis_url=redis_url, fleet_namespace=namespace, **overrides
        )
        scheduler = RedisNodeScheduler(config)
        made.append(scheduler)
        return ComfyNodePool(config, scheduler, overflow=overflow)

    yield make
    for scheduler in made:
        scheduler.close()


def scheduler_of(pool: ComfyNodePool) -> RedisNodeScheduler:
    assert isinstance(pool.scheduler, RedisNodeScheduler)
    return pool.scheduler


def run(pool: ComfyNodePool, graph: str = "restore_flux", **kwargs: Any) -> EngineResult:
    return pool.run_graph(
        graph_builder(graph),
        workflow_name=graph,
        run_id=kwargs.pop("run_id", f"run-{time.monotonic_ns()}"),
        images=[sample_input()],
        timeout=kwargs.pop("timeout", 60.0),
        **kwargs,
    )


def worker_process(namespace: str, nodes: list[StandinNode], *args: str, lease: float = 30.0) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "rekindle.testing.fleet_worker",
        "--redis",
        REDIS_URL,
        "--namespace",
        namespace,
        "--nodes",
        ",".join(node.url for node in nodes),
        "--lease",
        str(lease),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)


def most_at_once(node: StandinNode) -> int:
    """The largest number of prompts the node held at the same moment (queued or running), from its own record."""
    events = sorted(
        [(span.start, 1) for span in prompt_spans(node)] + [(span.end, -1) for span in prompt_spans(node)],
        key=lambda event: (event[0], event[1]),
    )
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_it_never_puts_two_of_our_prompts_on_one_node_across_two_worker_processes(
    comfy_standins: Standins, namespace: str
) -> None:
    nodes = comfy_standins(2)
    for node in nodes:
        node.set_faults(sampler_seconds=0.3)
    workers = [worker_process(namespace, nodes, "run", "--runs", "10", "--threads", "3") for _ in range(2)]
    outputs = [worker.communicate(timeout=150)[0] for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0]
    finished = [json.loads(line) for output in outputs for line in output.splitlines() if line.strip()]
    assert len(finished) == 20
    # Both nodes worked, and neither ever held two of ours at once (one slot each).
    assert {run["node"] for run in finished} == {node.url for node in nodes}
    assert [most_at_once(node) for node in nodes] == [1, 1]
    assert sum(len(prompt_spans(node)) for node in nodes) == 20


def test_it_frees_the_slot_of_a_killed_worker_when_its_lease_runs_out(
    comfy_standins: Standins, namespace: str, fleet: Callable[..., ComfyNodePool]
) -> None:
    (node,) = comfy_standins(1)
    holder = worker_process(namespace, [node], "hold", lease=2.0)
    assert holder.stdout is not None
    assert json.loads(holder.stdout.readline()) == {"held": node.url}
    pool = fleet([node], slot_lease_seconds=2.0)
    assert scheduler_of(pool).fleet_slots() == {node.url: 1}

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    result = run(pool)

    assert result.node == node.url
    assert scheduler_of(pool).fleet_slots() == {node.url: 0}


def test_it_sends_a_workflow_to_the_node_another_process_loaded_it_on(
    comfy_standins: Standins, namespace: str, fleet: Callable[..., ComfyNodePool]
) -> None:
    first, second = comfy_standins(2)
    # Process A lists the nodes the other way round, so it loads the workflow on the second node.
    process_a = worker_process(namespace, [second, first], "run", "--runs", "1", "--threads", "1")
    (line,) = process_a.communicate(timeout=60)[0].splitlines()
    assert json.loads(line)["node"] == second.url

    pool_b = fleet([first, second])
    result = run(pool_b)

    # Alone, B would have taken the first idle node and loaded the models there again.
    assert result.node == second.url
    assert len(prompt_spans(first)) == 0


def test_a_run_leaves_a_free_node_to_another_process_s_run_that_has_its_models_loaded_there(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    nodes = comfy_standins(2)
    process_a, process_b = fleet(nodes, affinity_wait_seconds=1.0), fleet(nodes, affinity_wait_seconds=1.0)

    restore_node, animate_node, animate_took, restore_took = who_takes_a_node_another_run_waits_for(
        process_a.scheduler, process_b.scheduler, 1.0
    )

    assert (animate_took, restore_took) == (animate_node, restore_node)


def test_it_starts_a_paid_hd_run_before_previews_that_waited_longer(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool], namespace: str
) -> None:
    (node,) = comfy_standins(1)
    pool = fleet([node], slot_wait_seconds=60.0)
    scheduler = scheduler_of(pool)
    held = scheduler.acquire("restore_flux")
    started: list[str] = []

    def start(name: str, priority: str) -> threading.Thread:
        def one() -> None:
            run(pool, run_id=name, priority=priority)
            started.append(name)

        thread = threading.Thread(target=one)
        thread.start()
        return thread

    waiters = redis.Redis.from_url(REDIS_URL)
    threads = [start("preview-1", "interactive")]
    wait_for(lambda: waiters.zcard(f"{namespace}:fleet:waiters") == 1, timeout=10)
    threads.append(start("preview-2", "interactive"))
    wait_for(lambda: waiters.zcard(f"{namespace}:fleet:waiters") == 2, timeout=10)
    threads.append(start("hd", "paid"))
    wait_for(lambda: waiters.zcard(f"{namespace}:fleet:waiters") == 3, timeout=10)
    scheduler.release(held)
    for thread in threads:
        thread.join(60)
    waiters.close()

    by_start = [span.run for span in sorted(prompt_spans(node), key=lambda span: span.start)]
    assert by_start == ["hd", "preview-1", "preview-2"]
    assert sorted(started) == ["hd", "preview-1", "preview-2"]


def test_it_overflows_to_runpod_when_the_pool_is_saturated_and_waits_when_the_budget_is_spent(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool], namespace: str
) -> None:
    (node,) = comfy_standins(1)
    with RunPodStandin() as runpod:
        engine = RunPodEngine(
            base_url=runpod.url, endpoint_id=runpod.endpoint_id, api_key=runpod.api_key, poll_interval=0.05
        )
        budget_config = OverflowConfig(after_seconds=0.5, max_concurrent=2, daily_gpu_seconds=100.0)
        client = redis.Redis.from_url(REDIS_URL)
        budget = OverflowBudget(budget_config, client, namespace=namespace)
        pool = fleet([node], overflow=Overflow(budget_config, engine, budget))
        held = pool.scheduler.acquire("restore_cpu")
        routes: list[tuple[str, str]] = []
        request = RunRequest("restore_cpu", "overflow-1", (sample_input(),), get_workflow("restore_cpu").validate({}))

        result = pool.run(request, hooks=RunHooks(routed=lambda engine, why: routes.append((engine, why))))

        assert result.engine == "runpod"
        assert routes[-1][0] == "runpod"
        assert "overflow to RunPod" in routes[-1][1]
        assert "node slot" in routes[-1][1]
        assert runpod.paths("POST") == [f"/v2/{runpod.endpoint_id}/run"]
        assert budget.today().runs == 1

        # Today's budget spent: the next run waits for the own pool instead.
        client.hset(f"{namespace}:fleet:overflow:day:{budget.today().day}", "gpu_seconds", 100.0)
        routes.clear()
        threading.Timer(1.5, pool.scheduler.release, args=(held,)).start()
        second = pool.run(
            RunRequest("restore_cpu", "overflow-2", (sample_input(),), get_workflow("restore_cpu").validate({})),
            hooks=RunHooks(routed=lambda engine, why: routes.append((engine, why))),
        )
        client.close()

    assert second.engine == "comfyui"
    assert second.node == node.url
    assert routes[0][0] == "comfyui"
    assert "today's OVERFLOW_DAILY_GPU_SECONDS are spent" in routes[0][1]
    assert budget.today().runs == 1


def test_it_finishes_a_run_when_redis_is_lost_and_writes_its_slots_back_when_it_returns(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    own_redis = RedisServer().start()
    try:
        first, second = comfy_standins(2)
        first.set_faults(sampler_seconds=1.5)
        pool = fleet([first, second], redis_url=own_redis.url)
        scheduler = scheduler_of(pool)
        submitted = threading.Event()
        results: list[EngineResult] = []
        running = threading.Thread(target=lambda: results.append(run(pool, on_submitted=lambda *_: submitted.set())))
        running.start()
        assert submitted.wait(20)
        own_redis.stop()
        running.join(60)

        assert len(results) == 1  # the run finished without Redis
        assert scheduler.backend.startswith("local")
        # A slot taken while Redis is away is this process's alone, and still held when Redis comes back.
        during = scheduler.acquire("restore_flux")
        own_redis.start()
        wait_for(lambda: scheduler.backend == "redis", timeout=20)
        assert scheduler.fleet_slots()[during.url] == 1
        scheduler.release(during)
        assert scheduler.fleet_slots() == {first.url: 0, second.url: 0}
        assert run(pool).node in (first.url, second.url)
    finally:
        own_redis.stop()


def test_a_slot_taken_as_redis_goes_away_is_given_back_and_not_held_for_ever(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    own_redis = RedisServer().start()
    try:
        (node,) = comfy_standins(1)
        pool = fleet([node], redis_url=own_redis.url, slot_lease_seconds=2.0)
        scheduler = scheduler_of(pool)
        # Redis stops right after the script took the slot.
        take_slot = scheduler._acquire_script

        def redis_stops_after(*args: Any, **kwargs: Any) -> Any:
            taken = take_slot(*args, **kwargs)
            own_redis.stop()
            return taken

        scheduler._acquire_script = redis_stops_after  # type: ignore[assignment]
        slot = scheduler.acquire("restore_flux")
        scheduler._acquire_script = take_slot
        assert scheduler.held_slots() == {node.url: 1}
        # Without Redis the node's one slot is still taken: a second run waits for it.
        with pytest.raises(NoNodeAvailable):
            scheduler.acquire("restore_flux", deadline=time.monotonic() + 0.5)
        assert scheduler.backend.startswith("local")
        assert scheduler.held_slots() == {node.url: 1}
        scheduler.release(slot)
        assert scheduler.held_slots() == {}

        own_redis.start()
        wait_for(lambda: scheduler.backend == "redis", timeout=20)
        # Nothing of ours is renewed any more: the node's one slot is free for the fleet again.
        wait_for(lambda: scheduler.fleet_slots() == {node.url: 0}, timeout=10)
        assert run(pool).node == node.url
    finally:
        own_redis.stop()


def test_a_slot_goes_back_when_recording_the_route_of_its_run_fails(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    (node,) = comfy_standins(1)
    pool = fleet([node])
    scheduler = scheduler_of(pool)

    def database_restarting(engine: str, reason: str) -> None:
        raise OperationalError("the database system is shutting down")

    with pytest.raises(OperationalError):
        run(pool, hooks=RunHooks(routed=database_restarting))

    assert scheduler.held_slots() == {}
    assert scheduler.fleet_slots() == {node.url: 0}
    assert run(pool).node == node.url


def test_it_drains_a_node_that_finishes_its_own_prompt_and_then_shows_as_drained(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    first, second = comfy_standins(2)
    pool = fleet([first, second])
    held = pool.scheduler.acquire("restore_flux")
    assert held.url == first.url

    assert pool.set_draining(first.url, True)
    states = {health.node: health.state for health in pool.health([])}
    assert states[first.url] == "draining"
    assert run(pool).node == second.url  # the draining node takes nothing new
    pool.scheduler.release(held)

    states = {health.node: health.state for health in pool.health([])}
    assert states == {first.url: "drained", second.url: "up"}
    pool.set_draining(first.url, False)
    assert pool.scheduler.view(first.url).state == "up"


def test_it_notices_a_hung_node_in_seconds_and_stops_our_prompt_there_when_it_wakes(
    comfy_standins: Standins, fleet: Callable[..., ComfyNodePool]
) -> None:
    first, second = comfy_standins(2)
    first.set_faults(sampler_seconds=30)
    # Production's socket and HTTP timeouts: 30 s of silence, then a 60 s /history, is what it took before;
    # the run's 40 s would not last that long.
    pool = fleet(
        [first, second], socket_quiet_seconds=30.0, http_timeout=60.0, stop_confirm_seconds=2.0, probe_timeout=1.0
    )
    process = first.process
    assert process is not None
    hung: list[str] = []

    def hang(node: str, _prompt: str) -> None:
        if node == first.url and not hung:
            os.kill(process.pid, signal.SIGSTOP)
            hung.append(node)

    try:
        result = run(pool, on_submitted=hang, timeout=40.0)
    finally:
        os.kill(process.pid, signal.SIGCONT)

    assert hung == [first.url]
    assert result.node == second.url
    # Awake again, the node is probed by the fleet and the prompt we gave up on is taken off it.
    wait_for(lambda: [span.how for span in prompt_spans(first)] == ["interrupted"], timeout=30)
    wait_for(lambda: pool.scheduler.view(first.url).abandoned == (), timeout=10)


def test_it_chooses_by_the_nodes_live_queue_not_by_what_our_runs_last_saw(comfy_pool: Any) -> None:
    pool, (first, second) = comfy_pool(2)
    first.set_faults(sampler_seconds=5)
    foreign = ComfyNodeClient(first.url)
    name = foreign.upload_image("foreign.png", sample_input().data, "image/png")
    for index in range(2):
        foreign.submit(graph_builder("restore_flux")({"image": name}), prompt_id=f"foreign-{index}", client_id="x")

    result = run(pool)

    assert result.node == second.url
    for index in range(2):
        foreign.stop_prompt(f"foreign-{index}")


def test_it_removes_our_inputs_after_a_run_and_its_outputs_once_the_result_is_released(comfy_pool: Any) -> None:
    pool, (node,) = comfy_pool(1)
    client = ComfyNodeClient(node.url)

    result = run(pool)

    # Kept until the caller has stored them: a later try of the attempt could fetch them again.
    assert client.disk()["files"] == {"input": 0, "output": 1}  # type: ignore[index]
    assert result.release is not None
    result.release()
    disk = client.disk()
    assert disk is not None
    assert disk["files"] == {"input": 0, "output": 0}
    assert node.counters()["files_removed"] >= 2  # the photo and the restored image
    assert "free of" in pool.health([])[0].disk


def test_it_leaves_the_files_of_a_node_without_the_extension_and_says_its_disk_is_unknown(comfy_pool: Any) -> None:
    pool, (node,) = comfy_pool(1)
    node.set_faults(no_files_extension=True)

    result = run(pool)

    assert result.first("image").data
    assert pool.health([])[0].disk == ""
