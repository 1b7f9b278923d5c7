"""ComfyUI engine overhead and routing, measured against stand-in ComfyUI processes (run by hand).

    .venv/bin/python bench/engine_overhead.py            # all three parts
    .venv/bin/python bench/engine_overhead.py --part a   # one part

(a) Our pool's run vs a minimal direct client (upload, socket, /prompt, wait for the end,
    /history, /view) on the same node: median seconds of each and the ratio (target <= 1.05).
(b) 4 nodes x 40 jobs with a fixed sampler time t: makespan against the ideal 40 / 4 x t
    (target <= 1.05x).
(c) A mixed stream of restore and animate jobs on 4 nodes with a model-switch delay: total
    switch time with our routing against round-robin (target <= 20% of round-robin's).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import requests
from PIL import Image
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rekindle.engines.base import InputImage
from rekindle.engines.comfyui.pool import ComfyNodePool, PoolConfig
from rekindle.testing.comfyui_fixtures import StandinNode, graph_builder


def small_photo() -> InputImage:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (180, 140, 100)).save(buffer, "JPEG", quality=85)
    return InputImage("image", "photo.jpg", buffer.getvalue())


def config(nodes: list[StandinNode], **overrides: Any) -> PoolConfig:
    values: dict[str, Any] = {
        "urls": tuple(node.url for node in nodes),
        "socket_quiet_seconds": 30.0,
        "poll_seconds": 0.5,
        "slot_wait_seconds": 600.0,
        "affinity_wait_seconds": 0.0,
        "client_name": "bench",
    }
    values.update(overrides)
    return PoolConfig(**values)


def run_ours(pool: ComfyNodePool, graph: str, photo: InputImage) -> None:
    pool.run_graph(
        graph_builder(graph),
        workflow_name=graph,
        run_id=f"bench-{uuid.uuid4().hex[:8]}",
        images=[photo],
        timeout=600,
    )


def run_direct(url: str, graph_name: str, photo: InputImage) -> None:
    """The least a client can do for one run."""
    name = f"direct-{uuid.uuid4().hex[:8]}.jpg"
    stored = requests.post(f"{url}/upload/image", files={"image": (name, photo.data)}, timeout=30).json()["name"]
    graph = graph_builder(graph_name)({"image": stored})
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    host = url.split("://", 1)[1]
    with connect(f"ws://{host}/ws?clientId={client_id}") as ws:
        requests.post(
            f"{url}/prompt", json={"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}, timeout=30
        )
        while True:
            message = ws.recv()
            data = json.loads(message) if isinstance(message, str) else {}
            end = data.get("type") == "executing" and data["data"].get("node") is None
            if end and data["data"].get("prompt_id") == prompt_id:
                break
    entry = requests.get(f"{url}/history/{prompt_id}", timeout=30).json()[prompt_id]
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            requests.get(f"{url}/view", params=item, timeout=30).raise_for_status()


def timed(function: Callable[[], None]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def part_a(runs: int) -> None:
    photo = small_photo()
    node = StandinNode(exec_seconds=0.5).start()
    try:
        pool = ComfyNodePool(config([node]))
        for graph, label in (("restore_twin", "CPU twin (no sampler)"), ("restore_flux", "FLUX graph, sampler 0.5 s")):
            run_ours(pool, graph, photo)  # warm: object_info cached, models loaded
            run_direct(node.url, graph, photo)
            ours, direct = [], []
            for _ in range(runs):
                # Alternate so drift on the shared machine hits both alike.
                ours.append(timed(partial(run_ours, pool, graph, photo)))
                direct.append(timed(partial(run_direct, node.url, graph, photo)))
            ours_median, direct_median = statistics.median(ours), statistics.median(direct)
            print(
                f"(a) {label}: {runs} runs each, median ours {ours_median * 1000:.1f} ms, "
                f"direct {direct_median * 1000:.1f} ms, ratio {ours_median / direct_median:.3f} (target <= 1.05)"
            )
    finally:
        node.stop()


def part_b(jobs: int, exec_seconds: float) -> None:
    photo = small_photo()
    nodes = [StandinNode(exec_seconds=exec_seconds).start() for _ in range(4)]
    try:
        pool = ComfyNodePool(config(nodes))
        with ThreadPoolExecutor(4) as warm:
            list(warm.map(lambda _: run_ours(pool, "restore_flux", photo), range(4)))
        for node in nodes:
            node.reset()
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as executor:
            list(executor.map(lambda _: run_ours(pool, "restore_flux", photo), range(jobs)))
        makespan = time.perf_counter() - started
        ideal = jobs / 4 * exec_seconds
        per_node = [node.counters().get("prompts", 0) for node in nodes]
        print(
            f"(b) 4 nodes x {jobs} jobs, sampler {exec_seconds:.2f} s: makespan {makespan:.2f} s, "
            f"ideal {ideal:.2f} s, ratio {makespan / ideal:.3f} (target <= 1.05); jobs per node {per_node}"
        )
    finally:
        for node in nodes:
            node.stop()


def run_stream(pools: list[ComfyNodePool], stream: list[str], photo: InputImage, *, threads: int) -> None:
    """Jobs taken in stream order by ``threads`` workers; job i goes to ``pools[i % len(pools)]``."""
    lock = threading.Lock()
    position = iter(range(len(stream)))

    def worker() -> None:
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            run_ours(pools[index % len(pools)], stream[index], photo)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def part_c(jobs: int, exec_seconds: float, switch_seconds: float, seed: int) -> None:
    photo = small_photo()
    stream = random.Random(seed).choices(["restore_flux", "animate_wan"], k=jobs)
    nodes = [StandinNode(exec_seconds=exec_seconds, switch_seconds=switch_seconds).start() for _ in range(4)]
    try:
        results = {}
        for strategy in ("round-robin", "ours"):
            for node in nodes:
                node.reset()
            if strategy == "ours":
                pool = ComfyNodePool(config(nodes, affinity_wait_seconds=switch_seconds))
                pools = [pool] * len(nodes)
            else:
                pools = [ComfyNodePool(config([node])) for node in nodes]
            started = time.perf_counter()
            run_stream(pools, stream, photo, threads=8)
            makespan = time.perf_counter() - started
            counters = [node.counters() for node in nodes]
            switches = sum(c.get("model_switches", 0) for c in counters)
            switch_time = sum(c.get("model_switch_ms", 0) for c in counters) / 1000
            results[strategy] = switch_time
            print(
                f"(c) {strategy}: {jobs} jobs ({stream.count('restore_flux')} restore, "
                f"{stream.count('animate_wan')} animate), {switches} model switches, "
                f"{switch_time:.1f} s switching, makespan {makespan:.2f} s"
            )
        share = results["ours"] / results["round-robin"] if results["round-robin"] else 0.0
        print(f"(c) switch time ours / round-robin: {share:.1%} (target <= 20%)")
    finally:
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["a", "b", "c"], action="append")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--exec-seconds", type=float, default=1.0)
    parser.add_argument("--switch-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    parts = args.part or ["a", "b", "c"]
    if "a" in parts:
        part_a(args.runs)
    if "b" in parts:
        part_b(args.jobs, args.exec_seconds)
    if "c" in parts:
        part_c(args.jobs, args.exec_seconds / 2, args.switch_seconds, args.seed)


if __name__ == "__main__":
    main()
