"""A worker process of the fleet tests: a ComfyUI pool on the shared Redis state, running or holding slots.

    python -m rekindle.testing.fleet_worker --redis URL --namespace NS --nodes URL,URL run --runs 10 --threads 3
    python -m rekindle.testing.fleet_worker ... hold --workflow restore_flux    # takes a slot, prints, sleeps

``run`` prints one JSON line per finished run (``{"run", "node"}``); ``hold`` prints
``{"held": url}`` once it has a slot and then sleeps until killed. It needs no Django
settings: the pool runs the fixture graphs directly (``run_graph``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.fleet import RedisNodeScheduler
from rekindle.engines.comfyui.pool import ComfyNodePool
from rekindle.testing.comfyui_fixtures import graph_builder, sample_input


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--nodes", required=True)
    parser.add_argument("--lease", type=float, default=30.0)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--runs", type=int, default=10)
    run.add_argument("--threads", type=int, default=3)
    run.add_argument("--workflow", default="restore_flux")
    hold = sub.add_parser("hold")
    hold.add_argument("--workflow", default="restore_flux")
    args = parser.parse_args()

    config = PoolConfig(
        urls=tuple(args.nodes.split(",")),
        socket_quiet_seconds=1.0,
        poll_seconds=0.1,
        node_backoff_seconds=0.5,
        node_backoff_max_seconds=2.0,
        slot_wait_seconds=60.0,
        affinity_wait_seconds=0.0,
        client_name=f"fleet-test-{os.getpid()}",
        fleet_state="redis",
        redis_url=args.redis,
        fleet_namespace=args.namespace,
        slot_lease_seconds=args.lease,
    )
    scheduler = RedisNodeScheduler(config)
    pool = ComfyNodePool(config, scheduler)
    lock = threading.Lock()

    def say(message: dict[str, object]) -> None:
        with lock:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    if args.command == "hold":
        slot = scheduler.acquire(args.workflow)
        say({"held": slot.url})
        while True:
            time.sleep(1)

    def one(index: int) -> None:
        run_id = f"p{os.getpid()}-{index}"
        result = pool.run_graph(
            graph_builder(args.workflow),
            workflow_name=args.workflow,
            run_id=run_id,
            images=[sample_input()],
            timeout=120.0,
        )
        say({"run": run_id, "node": result.node})

    with ThreadPoolExecutor(args.threads) as executor:
        list(executor.map(one, range(args.runs)))
    scheduler.close()


if __name__ == "__main__":
    main()
