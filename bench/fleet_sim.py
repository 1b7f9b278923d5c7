"""Past this machine, on paper: a discrete-event simulation of the fleet at 100 nodes and 20 worker machines.

    .venv/bin/python bench/fleet_sim.py [--nodes 100] [--machines 20] [--processes 2] [--threads 8]
        [--per-hour 10000] [--peak 1.5] [--restore-seconds 25] [--overflow-after 60] [--overflow-max 20]
        [--budget-gpu-seconds 36000] [--redis-per-run R] [--redis-idle-per-process I] [--bench-nodes 16]

Plain Python (heapq), one simulated day, restores only. What is modelled, and from where:

- arrivals: Poisson, ``--per-hour`` on average over the day, following a daily curve whose
  peak hour is ``--peak`` times the mean (a cosine peaking at 20:00, trough at 08:00);
- a run waits in the broker's queue (FIFO) for one of the ``machines x processes x threads``
  worker threads, then in the fleet's slot line (``RedisNodeScheduler``: FIFO within a
  priority) for a node slot; one slot per node (``COMFYUI_PROMPTS_PER_NODE=1``);
- service: a node holds the slot for the GPU time (lognormal, mean ``--restore-seconds``,
  cv 0.15: FLUX.1 Kontext at about a megapixel on one data-centre GPU) plus our own per-run
  engine overhead, 0.05 s (bench/pipeline.py: about 45 ms median end to end beyond execution);
- overflow, as ``ComfyNodePool`` does it: a run entering the slot line whose estimated wait
  (``wait_estimate``: runs ahead, free slots, the measured mean service) is over
  ``--overflow-after``, or which has waited that long, goes to RunPod when fewer than
  ``--overflow-max`` are there and the day's ``--budget-gpu-seconds`` allow; RunPod takes the
  same GPU time plus 8 s of queue and cold start on average (``OVERFLOW_COST_PER_GPU_SECOND``
  0.00076 $/s);
- load on the shared services, per second, at the peak hour:
  Redis: measured commands per run and idle commands per process per second come from
  ``bench/fleet.py`` at ``--bench-nodes`` nodes (defaults: its last run, bench/README.md) and
  are scaled by nodes (both are dominated by reads of every node's state); on top, each
  run waiting in the slot line polls four times a second and on each release (one script
  that touches every node's slot set, and one read of every node shared by the process's
  waiting threads per 50 ms);
  PostgreSQL: rows written per run (claim, submission, routing, GPU seconds, success, the
  job's pick: 6) plus a progress or lease write per second of execution (the heartbeat
  writes at most once a second);
  S3: one GET of the original and one PUT of the result per restore, and two GETs of the
  result by the person (presigned URLs, API and email).

Prints queue wait p50/p95 over the day and in the peak hour, node utilisation, overflow
runs and spend, and the peak-hour load on each service beside the capacity it is compared
with; the first service to pass its capacity is the first bottleneck.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field

HOUR = 3600.0
DAY = 24 * HOUR
OVERHEAD_SECONDS = 0.05
RUNPOD_EXTRA_SECONDS = 8.0
COST_PER_GPU_SECOND = 0.00076
POLLS_PER_SECOND = 4.0
SNAPSHOT_SECONDS = 0.05
PG_ROWS_PER_RUN = 6.0
S3_REQUESTS_PER_RESTORE = 4.0
# What each service is compared with: single-node figures, conservative.
CAPACITY = {
    "Redis commands/s": 100_000.0,  # one Redis core: ~100k networked commands/s (more when pipelined)
    "Redis script key ops/s": 1_000_000.0,  # calls inside Lua scripts, ~1 us each
    "PostgreSQL row writes/s": 5_000.0,  # small UPDATEs with a commit each, one primary on SSD
    "S3 requests/s": 3_500.0,  # PUT/POST per prefix per second (GET: 5,500)
}


@dataclass
class Run:
    arrival: float
    service: float
    start: float | None = None
    where: str = ""
    entered_line: float | None = None


@dataclass
class Stats:
    waits: list[float] = field(default_factory=list)
    peak_waits: list[float] = field(default_factory=list)
    busy_seconds: float = 0.0
    overflow_runs: int = 0
    overflow_seconds: float = 0.0
    refused: int = 0
    line_seconds_by_hour: list[float] = field(default_factory=lambda: [0.0] * 24)
    releases_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    runs_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    busy_by_hour: list[float] = field(default_factory=lambda: [0.0] * 24)


def rate_at(t: float, per_hour: float, peak: float) -> float:
    """Arrivals per second at time ``t`` (seconds into the day): mean ``per_hour``, peak hour ``peak`` x mean."""
    amplitude = peak - 1.0
    hour = t / HOUR
    return per_hour / HOUR * (1.0 + amplitude * math.cos(2 * math.pi * (hour - 20.0) / 24.0))


def arrivals(per_hour: float, peak: float, rng: random.Random) -> list[float]:
    """A non-homogeneous Poisson process by thinning."""
    top = per_hour / HOUR * peak
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(top)
        if t >= DAY:
            return times
        if rng.random() < rate_at(t, per_hour, peak) / top:
            times.append(t)


def simulate(args: argparse.Namespace) -> Stats:
    rng = random.Random(args.seed)
    sigma = math.sqrt(math.log(1 + 0.15**2))
    mu = math.log(args.restore_seconds) - sigma**2 / 2
    runs = [Run(t, rng.lognormvariate(mu, sigma) + OVERHEAD_SECONDS) for t in arrivals(args.per_hour, args.peak, rng)]
    threads = args.machines * args.processes * args.threads
    stats = Stats()
    events: list[tuple[float, int, str, int]] = []
    seq = 0

    def push(when: float, kind: str, index: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, index))

    for index, run in enumerate(runs):
        push(run.arrival, "arrive", index)
    broker: deque[int] = deque()
    line: deque[int] = deque()
    free_threads = threads
    free_nodes = args.nodes
    overflow_running = 0
    spent = 0.0
    mean_service = args.restore_seconds
    last_t = 0.0

    def account(now: float) -> None:
        nonlocal last_t
        # Runs waiting in the slot line, integrated per hour (for the Redis polling load).
        t = last_t
        while t < min(now, DAY):
            hour = int(t // HOUR)
            edge = min(now, (hour + 1) * HOUR)
            stats.line_seconds_by_hour[hour] += len(line) * (edge - t)
            stats.busy_by_hour[hour] += (args.nodes - free_nodes) * (edge - t)
            t = edge
        last_t = now

    def try_overflow(index: int, now: float) -> bool:
        nonlocal overflow_running, spent
        if args.overflow_after <= 0 or overflow_running >= args.overflow_max:
            stats.refused += 1
            return False
        run = runs[index]
        if spent + run.service > args.budget_gpu_seconds:
            stats.refused += 1
            return False
        overflow_running += 1
        spent += run.service
        run.start = now + RUNPOD_EXTRA_SECONDS
        run.where = "runpod"
        stats.overflow_runs += 1
        stats.overflow_seconds += run.service
        push(run.start + run.service, "runpod_done", index)
        return True

    def start_on_node(index: int, now: float) -> None:
        nonlocal free_nodes
        run = runs[index]
        free_nodes -= 1
        run.start = now
        run.where = "node"
        stats.busy_seconds += run.service
        push(now + run.service, "node_done", index)

    def record(run: Run) -> None:
        assert run.start is not None
        wait = run.start - run.arrival
        stats.waits.append(wait)
        hour = int(run.arrival // HOUR)
        stats.runs_by_hour[min(hour, 23)] += 1
        if hour == 20:
            stats.peak_waits.append(wait)

    def thread_takes(index: int, now: float) -> None:
        """A worker thread picks the run from the broker: it asks for a slot (or overflows)."""
        run = runs[index]
        run.entered_line = now
        if free_nodes > 0 and not line:
            start_on_node(index, now)
            record(run)
            return
        ahead = len(line)
        waiting = ahead + 1 - free_nodes
        estimate = math.ceil(waiting / args.nodes) * mean_service if waiting > 0 else 0.0
        if estimate > args.overflow_after > 0 and try_overflow(index, now):
            record(run)
            return
        line.append(index)
        if args.overflow_after > 0:
            push(now + args.overflow_after, "waited", index)

    def thread_free(now: float) -> None:
        nonlocal free_threads
        free_threads += 1
        if broker:
            free_threads -= 1
            thread_takes(broker.popleft(), now)

    while events:
        now, _, kind, index = heapq.heappop(events)
        account(now)
        if kind == "arrive":
            if free_threads > 0:
                free_threads -= 1
                thread_takes(index, now)
            else:
                broker.append(index)
        elif kind == "node_done":
            free_nodes += 1
            stats.releases_by_hour[min(int(now // HOUR), 23)] += 1
            mean_service += 0.2 * (runs[index].service - mean_service)
            while free_nodes > 0 and line:
                nxt = line.popleft()
                start_on_node(nxt, now)
                record(runs[nxt])
            thread_free(now)
        elif kind == "runpod_done":
            overflow_running -= 1
            thread_free(now)
        elif kind == "waited":
            run = runs[index]
            if run.start is None and index in line and try_overflow(index, now):
                line.remove(index)
                record(run)
    return stats


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def loads(args: argparse.Namespace, stats: Stats) -> dict[str, float]:
    """Peak-hour load on each shared service, per second."""
    peak = 20
    runs_per_second = stats.runs_by_hour[peak] / HOUR
    processes = args.machines * args.processes
    scale = args.nodes / args.bench_nodes
    waiting = stats.line_seconds_by_hour[peak] / HOUR  # runs in the slot line, on average
    releases = stats.releases_by_hour[peak] / HOUR
    polls = waiting * (POLLS_PER_SECOND + releases)
    # Processes with a run waiting read every node at most once per SNAPSHOT_SECONDS (or per poll, if rarer).
    readers = min(processes, waiting)
    snapshot_reads = readers * min(1.0 / SNAPSHOT_SECONDS, POLLS_PER_SECOND + releases)
    per_run = runs_per_second * args.redis_per_run * scale
    idle = processes * args.redis_idle_per_process * scale
    snapshots = snapshot_reads * 2 * args.nodes
    commands = per_run + idle + polls + snapshots
    script_ops = polls * (2 * args.nodes + 6)
    execution = args.restore_seconds
    return {
        "Redis commands/s": commands,
        "Redis script key ops/s": script_ops,
        "PostgreSQL row writes/s": runs_per_second * (PG_ROWS_PER_RUN + execution),
        "S3 requests/s": runs_per_second * S3_REQUESTS_PER_RESTORE,
        "_waiting": waiting,
        "_redis_per_run": per_run,
        "_redis_idle": idle,
        "_redis_polls": polls,
        "_redis_snapshots": snapshots,
        "_runs_per_second": runs_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-hour", type=float, default=10_000)
    parser.add_argument("--peak", type=float, default=1.5)
    parser.add_argument("--restore-seconds", type=float, default=25.0)
    parser.add_argument("--overflow-after", type=float, default=60.0)
    parser.add_argument("--overflow-max", type=int, default=20)
    parser.add_argument("--budget-gpu-seconds", type=float, default=36_000.0)
    parser.add_argument("--redis-per-run", type=float, default=400.0, help="bench/fleet.py's figure")
    parser.add_argument("--redis-idle-per-process", type=float, default=100.0, help="bench/fleet.py's figure")
    parser.add_argument("--bench-nodes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    stats = simulate(args)
    load = loads(args, stats)
    utilisation = stats.busy_seconds / (args.nodes * DAY)
    peak_utilisation = stats.busy_by_hour[20] / (args.nodes * HOUR)
    print(
        f"{args.nodes} nodes, {args.machines} machines x {args.processes} processes x {args.threads} threads, "
        f"{args.per_hour:.0f} restores/h on average (peak hour x{args.peak}), {args.restore_seconds:.0f} s each; "
        f"overflow after {args.overflow_after:.0f} s, at most {args.overflow_max}, "
        f"{args.budget_gpu_seconds:.0f} GPU s/day"
    )
    print(f"runs: {len(stats.waits)} in the day, {load['_runs_per_second'] * HOUR:.0f} in the peak hour")
    print(
        f"queue wait: day p50 {percentile(stats.waits, 0.5):.1f} s, p95 {percentile(stats.waits, 0.95):.1f} s; "
        f"peak hour p50 {percentile(stats.peak_waits, 0.5):.1f} s, p95 {percentile(stats.peak_waits, 0.95):.1f} s"
    )
    print(f"node utilisation: day {100 * utilisation:.1f}%, peak hour {100 * peak_utilisation:.1f}%")
    print(
        f"overflow: {stats.overflow_runs} runs, {stats.overflow_seconds:.0f} GPU s, "
        f"${stats.overflow_seconds * COST_PER_GPU_SECOND:.2f} a day; {stats.refused} refusals (limit or budget)"
    )
    print(f"peak hour: {load['_waiting']:.1f} runs in the slot line on average")
    print(
        f"  Redis commands/s at the peak: {load['_redis_per_run']:,.0f} for the runs themselves, "
        f"{load['_redis_idle']:,.0f} from the processes' background (maintenance and the broker's polling), "
        f"{load['_redis_polls']:,.0f} slot scripts of waiting runs, {load['_redis_snapshots']:,.0f} node reads "
        "for waiting runs"
    )
    first = None
    for name, capacity in CAPACITY.items():
        share = load[name] / capacity
        print(f"  {name:<26} {load[name]:>12,.0f}  of ~{capacity:>10,.0f}  ({100 * share:5.1f}%)")
        if first is None or share > first[1]:
            first = (name, share)
    assert first is not None
    print(f"first bottleneck: {first[0]} at {100 * first[1]:.0f}% of its capacity")


if __name__ == "__main__":
    main()
