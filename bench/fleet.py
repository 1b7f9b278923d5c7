"""The GPU fleet under load: today's per-process pool against the shared fleet state, in one run.

    .venv/bin/python bench/fleet.py [--nodes 16] [--workers 6] [--threads 4] [--jobs 600]
                                    [--exec-seconds 1.0] [--switch-seconds 2.0] [--seed 7] [--skip-baseline]

Starts its own parts: a database ``rekindle_bench_fleet`` on the local PostgreSQL (created
and migrated), Dramatiq and fleet namespaces of their own on the local Redis, local file
storage in a temporary folder, ``--nodes`` ComfyUI stand-ins (a sampler takes
``--exec-seconds``, a model switch ``--switch-seconds``), ``--workers`` ``rundramatiq``
processes, and for the overflow part a RunPod stand-in in this process. The same parts and
the same jobs run twice: first as the baseline (``FLEET_STATE=local``, live queue reads off,
HD on the interactive queue: the pool as it was), then on the shared fleet state
(``FLEET_STATE=redis`` and the defaults). Each mode runs:

1. throughput: ``--jobs`` mixed jobs (60% restore, 30% preview, 10% paid HD, shuffled with
   ``--seed``) sent at once. Makespan (first send to last ``finished_at``) over ideal (the
   sum of each prompt's own execution time without a switch, over the nodes); the most of
   our prompts ever on one node at once (from the stand-ins' prompt records); model
   switches (the stand-ins' counters) against round-robin over the same jobs in the same
   order (counted from the models each workflow loads).
2. a preview flood: 10 previews per node sent at once, then one paid HD run every half
   second (``--hd`` of them); the p95 of the HD runs' wait (from its send to the moment its
   prompt started on a node, from the stand-in's record).
3. overflow (shared mode only): a burst of 8 restores per node with ``OVERFLOW_AFTER_SECONDS``
   at 2 s and 12 worker threads per process; the delay from the burst to the first RunPod
   ``/run``, and how many runs overflowed.

Prints the figures and the conditions (load average, cores). Absolute times are noisy on
a shared machine; the two modes run back to back on the same parts for that reason.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = ""
REDIS_PIDS: list[int] = []
DATABASE = "rekindle_bench_fleet"
PARAMS = {
    "restore": {"megapixels": 0.25, "steps": 4},
    "animate_preview": {"seconds": 1.0, "fps": 8, "width": 256, "height": 256},
    "animate_hd": {"seconds": 1.0, "fps": 8, "width": 256, "height": 256},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ensure_database() -> None:
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


@dataclass
class ModeResult:
    name: str
    makespan: float = 0.0
    ideal: float = 0.0
    most_at_once: int = 0
    switches: int = 0
    round_robin_switches: int = 0
    failed: int = 0
    hd_waits: list[float] = field(default_factory=list)
    overflow_delay: float | None = None
    overflow_runs: int = 0
    overflow_seconds: float = 0.0
    per_node: dict[str, int] = field(default_factory=dict)
    # Each node's time between the end of one of our prompts and the queueing of the next (our per-run work).
    gaps: list[float] = field(default_factory=list)
    # The makespan's part after the last prompt ended on any node (the last runs' fetch and write).
    tail: float = 0.0
    # CPU seconds spent during the throughput part: the whole machine's, and per group of processes.
    cpu_machine: float = 0.0
    cpu_groups: dict[str, float] = field(default_factory=dict)
    # Load on the shared services: Redis commands per run and per idle second, PostgreSQL row writes per run.
    redis_per_run: float = 0.0
    redis_idle_per_second: float = 0.0
    pg_rows_per_run: float = 0.0
    pg_commits_per_run: float = 0.0


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float:
    """CPU seconds the machine spent on anything but idling and waiting for I/O, since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / _TICKS


def process_cpu(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) of each group's processes and all their descendants, plus PostgreSQL's."""
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(rest[1]), name, (int(rest[11]) + int(rest[12])) / _TICKS)
    group_of: dict[int, str] = {}
    for group, pids in roots.items():
        for pid in pids:
            group_of[pid] = group
    totals: dict[str, float] = defaultdict(float)
    for pid, (_, name, seconds) in stats.items():
        ancestor, found = pid, None
        while ancestor in stats and found is None:
            found = group_of.get(ancestor)
            ancestor = stats[ancestor][0]
        if found is None and name.startswith("postgres"):
            found = "postgresql"
        if found is not None:
            totals[found] += seconds
    return dict(totals)


def redis_commands() -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def pg_counts() -> tuple[int, int]:
    """Commits and rows written in the benchmark's database so far (PostgreSQL's statistics)."""
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = %s",
            [DATABASE],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--hd", type=int, default=12)
    parser.add_argument("--exec-seconds", type=float, default=1.0)
    parser.add_argument("--switch-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--prompts-per-node", type=int, default=1, help="COMFYUI_PROMPTS_PER_NODE in both modes")
    args = parser.parse_args()

    global REDIS_URL
    ensure_database()
    from rekindle.testing.pipeline import RedisServer

    # A redis-server of our own, so its command counts are this benchmark's alone.
    own_redis = RedisServer().start()
    REDIS_URL = own_redis.url
    if own_redis.process is not None:
        REDIS_PIDS.append(own_redis.process.pid)
    media = Path(tempfile.mkdtemp(prefix="rekindle-bench-fleet-"))
    base_env = {
        "DATABASE_URL": f"{POSTGRES}/{DATABASE}",
        "REDIS_URL": REDIS_URL,
        "MEDIA_ROOT": str(media),
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "REKINDLE_ENGINE": "comfyui",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
        "COMFYUI_PROMPTS_PER_NODE": str(args.prompts_per_node),
    }
    os.environ.update(base_env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "rekindle.settings"

    from rekindle.testing.comfyui_fixtures import StandinNode

    nodes = [
        StandinNode(exec_seconds=args.exec_seconds, switch_seconds=args.switch_seconds).start()
        for _ in range(args.nodes)
    ]
    os.environ["COMFYUI_URLS"] = ",".join(node.url for node in nodes)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    load_before = os.getloadavg()
    results: list[ModeResult] = []
    try:
        rng = random.Random(args.seed)
        kinds = ["restore"] * 6 + ["animate_preview"] * 3 + ["animate_hd"]
        mix = [kinds[i % len(kinds)] for i in range(args.jobs)]
        rng.shuffle(mix)
        modes = [("shared", False)] if args.skip_baseline else [("baseline", True), ("shared", False)]
        for name, baseline in modes:
            results.append(run_mode(name, baseline, args, nodes, mix, media))
    finally:
        for node in nodes:
            node.stop()
        own_redis.stop()
        shutil.rmtree(media, ignore_errors=True)
    load_after = os.getloadavg()
    report(results, args, load_before, load_after)


# Every variable a mode sets: cleared before the next mode sets its own.
MODE_KEYS = (
    "FLEET_STATE",
    "COMFYUI_QUEUE_FRESH_SECONDS",
    "FLEET_RESERVED_PAID_SLOTS",
    "DRAMATIQ_QUEUE_PAID",
    "OVERFLOW_AFTER_SECONDS",
    "OVERFLOW_MAX_CONCURRENT",
    "OVERFLOW_DAILY_GPU_SECONDS",
    "RUNPOD_BASE_URL",
    "RUNPOD_ENDPOINT_ID",
    "RUNPOD_API_KEY",
    "RUNPOD_POLL_INTERVAL",
)


def mode_env(baseline: bool, nodes: list[Any], namespace: str) -> dict[str, str]:
    env = {
        "DRAMATIQ_REDIS_NAMESPACE": namespace,
        "FLEET_NAMESPACE": namespace,
        "COMFYUI_URLS": ",".join(node.url for node in nodes),
        "COMFYUI_AFFINITY_WAIT_SECONDS": "2",
        "COMFYUI_SLOT_WAIT_SECONDS": "300",
        "FLEET_OUTAGE_WAIT_SECONDS": "60",
        "OVERFLOW_AFTER_SECONDS": "0",
    }
    if baseline:
        env.update(
            {
                "FLEET_STATE": "local",
                "COMFYUI_QUEUE_FRESH_SECONDS": "0",
                "FLEET_RESERVED_PAID_SLOTS": "0",
                # As the pool was: HD runs shared the queue of the previews.
                "DRAMATIQ_QUEUE_PAID": "interactive",
            }
        )
    else:
        env["FLEET_STATE"] = "redis"
    return env


class Mode:
    """One mode's workers and broker; sends attempts and waits for them."""

    def __init__(self, env: dict[str, str], workers: int, threads: int) -> None:
        from animation.tasks import generate_hd_result
        from rekindle.testing.pipeline import BrokerSwap, WorkerProcess, make_redis_broker

        for key in MODE_KEYS:
            os.environ.pop(key, None)
        os.environ.update(env)
        self.env = env
        # This process's actors were declared with the settings it started with: send HD where the workers read it.
        self.hd_actor = generate_hd_result
        self.hd_queue = generate_hd_result.queue_name
        generate_hd_result.queue_name = env.get("DRAMATIQ_QUEUE_PAID", "paid")
        self.broker = make_redis_broker(REDIS_URL, env["DRAMATIQ_REDIS_NAMESPACE"])
        self.swap = BrokerSwap(self.broker)
        self.broker.declare_queue("bulk")
        emails = Path(tempfile.mkdtemp(prefix="rekindle-bench-fleet-mail-"))
        worker_env = {
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(emails),
            "LOG_LEVEL": "INFO",
        }
        self.workers = [WorkerProcess(worker_env, threads=threads) for _ in range(workers)]
        for worker in self.workers:
            worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.hd_actor.queue_name = self.hd_queue
        self.swap.restore()
        self.broker.flush_all()
        self.broker.close()


def make_attempts(mix: list[str], media: Path) -> list[Any]:
    """Rows for every job of ``mix``, queued and not yet sent (each animation has a restored image on storage)."""
    from animation.models import AnimationAttempt, HDAttempt
    from rekindle import storage
    from rekindle.testing.factories import AnimationAttemptFactory, JobFactory, RestoreAttemptFactory, jpeg_bytes
    from restoration.models import RestoreAttempt

    image = jpeg_bytes(320, 240)
    attempts: list[Any] = []
    for kind in mix:
        job = JobFactory.create(stored_original=True)
        if kind == "restore":
            attempts.append(RestoreAttempt.objects.create(job=job, workflow="restore", parameters=PARAMS["restore"]))
            continue
        restore = RestoreAttemptFactory.create(job=job, succeeded=True)
        storage.put(restore.result_key, image, content_type="image/jpeg")
        if kind == "animate_preview":
            attempts.append(
                AnimationAttempt.objects.create(
                    job=job, restore=restore, workflow="animate_preview", parameters=PARAMS["animate_preview"]
                )
            )
            continue
        preview = AnimationAttemptFactory.create(job=job, restore=restore, succeeded=True, hd_paid=True)
        attempts.append(
            HDAttempt.objects.create(job=job, animation=preview, workflow="animate_hd", parameters=PARAMS["animate_hd"])
        )
    return attempts


def send(attempts: list[Any]) -> None:
    from jobs.attempts import attempt_send

    for attempt in attempts:
        assert attempt_send(type(attempt), attempt.pk)


def wait_done(attempts: list[Any], timeout: float) -> list[Any]:
    from jobs.models import AttemptStatus

    deadline = time.monotonic() + timeout
    by_model: dict[Any, list[Any]] = defaultdict(list)
    for attempt in attempts:
        by_model[type(attempt)].append(attempt.pk)
    while True:
        pending = sum(
            model.objects.filter(pk__in=ids, status__in=(AttemptStatus.QUEUED, AttemptStatus.RUNNING)).count()
            for model, ids in by_model.items()
        )
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return [row for model, ids in by_model.items() for row in model.objects.filter(pk__in=ids)]


def records(nodes: list[Any]) -> dict[str, list[Any]]:
    from rekindle.testing.comfyui_fixtures import prompt_spans

    return {node.url: prompt_spans(node) for node in nodes}


def most_at_once(spans: list[Any]) -> int:
    events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans], key=lambda e: (e[0], e[1]))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def workflow_models() -> dict[str, tuple[str, ...]]:
    """The model files each workflow loads, as the stand-in counts a switch."""
    from rekindle.testing.comfyui_standin.server import _model_inputs
    from rekindle.workflows import get_workflow

    models = {}
    for name, params in PARAMS.items():
        workflow = get_workflow(name)
        graph = workflow.build(workflow.validate(params), {"image": "x.png"}, filename_prefix="x")
        models[name] = tuple(sorted(str(v) for node in graph.values() for _, v in _model_inputs(node)))
    return models


def round_robin_switches(order: list[str], nodes: int) -> int:
    models = workflow_models()
    loaded: list[tuple[str, ...] | None] = [None] * nodes
    switches = 0
    for index, workflow in enumerate(order):
        slot = index % nodes
        if loaded[slot] is not None and loaded[slot] != models[workflow]:
            switches += 1
        loaded[slot] = models[workflow]
    return switches


def reset_nodes(nodes: list[Any]) -> None:
    for node in nodes:
        node.reset()
        node.clear_record()


def run_mode(
    name: str, baseline: bool, args: argparse.Namespace, nodes: list[Any], mix: list[str], media: Path
) -> ModeResult:
    from jobs.models import AttemptStatus

    result = ModeResult(name)
    namespace = f"rekindle-bench-fleet-{name}-{uuid.uuid4().hex[:6]}"
    print(f"[{name}] starting {args.workers} workers x {args.threads} threads", flush=True)
    mode = Mode(mode_env(baseline, nodes, namespace), args.workers, args.threads)
    try:
        # 1. throughput
        attempts = make_attempts(mix, media)
        reset_nodes(nodes)
        idle_from = redis_commands()
        time.sleep(5.0)
        result.redis_idle_per_second = (redis_commands() - idle_from) / 5.0
        time.sleep(1.0)  # PostgreSQL's statistics lag a little
        commits_from, rows_from = pg_counts()
        redis_from = redis_commands()
        roots = {
            "workers": [w.process.pid for w in mode.workers if w.process is not None],
            "stand-ins": [n.process.pid for n in nodes if n.process is not None],
            "redis": REDIS_PIDS,
        }
        cpu_from, machine_from = process_cpu(roots), machine_busy_seconds()
        started = time.time()
        send(attempts)
        done = wait_done(attempts, timeout=1800)
        cpu_to, machine_to = process_cpu(roots), machine_busy_seconds()
        result.cpu_machine = machine_to - machine_from
        # Processes that ended meanwhile drop out of the sums, so a group never counts below zero.
        result.cpu_groups = {group: max(0.0, cpu_to.get(group, 0.0) - cpu_from.get(group, 0.0)) for group in cpu_to}
        result.redis_per_run = (redis_commands() - redis_from) / len(attempts)
        time.sleep(1.0)
        commits_to, rows_to = pg_counts()
        result.pg_commits_per_run = (commits_to - commits_from) / len(attempts)
        result.pg_rows_per_run = (rows_to - rows_from) / len(attempts)
        spans = records(nodes)
        finished = [row.finished_at.timestamp() for row in done if row.finished_at is not None]
        result.failed = sum(1 for row in done if row.status != AttemptStatus.SUCCEEDED)
        result.makespan = max(finished) - started
        by_run: dict[str, str] = {}
        for row in done:
            by_run[str(row.pk)] = row.workflow
        executions: dict[str, list[float]] = defaultdict(list)
        order: list[tuple[float, str]] = []
        for node_spans in spans.values():
            for span in node_spans:
                workflow = by_run.get(span.run.split("-run")[0])
                if workflow is None or span.how != "success":
                    continue
                order.append((span.start, workflow))
        started_events = started_times(nodes)
        for node_spans in spans.values():
            for span in node_spans:
                workflow = by_run.get(span.run.split("-run")[0])
                begin = started_events.get(span.prompt_id)
                if workflow is not None and begin is not None and span.how == "success":
                    executions[workflow].append(span.end - begin)
        service = {workflow: percentile(values, 0.1) for workflow, values in executions.items()}
        result.ideal = sum(service.get(row.workflow, 0.0) for row in done) / len(nodes)
        result.most_at_once = max(most_at_once(node_spans) for node_spans in spans.values())
        result.per_node = {url: len(node_spans) for url, node_spans in spans.items()}
        result.gaps = node_gaps(spans)
        result.tail = max(finished) - max(span.end for node_spans in spans.values() for span in node_spans)
        result.switches = sum(int(node.counters().get("model_switches", 0)) for node in nodes)
        result.round_robin_switches = round_robin_switches([w for _, w in sorted(order)], len(nodes))
        print(
            f"[{name}] throughput: makespan {result.makespan:.1f}s ideal {result.ideal:.1f}s, "
            f"most at once {result.most_at_once}, switches {result.switches} "
            f"(round-robin {result.round_robin_switches}), "
            f"failed {result.failed}, {describe_gaps(result.gaps)}, tail {result.tail:.1f}s, "
            f"service {json.dumps({k: round(v, 2) for k, v in service.items()})}; "
            f"Redis {result.redis_per_run:.0f} commands/run, {result.redis_idle_per_second:.0f}/s idle; "
            f"PostgreSQL {result.pg_rows_per_run:.1f} rows written and {result.pg_commits_per_run:.1f} commits/run "
            f"(commits include the benchmark's own polling)",
            flush=True,
        )
        print(f"[{name}] {describe_cpu(result, len(attempts))}", flush=True)

        # 2. HD during a preview flood
        reset_nodes(nodes)
        flood = make_attempts(["animate_preview"] * (10 * len(nodes)), media)
        hds = make_attempts(["animate_hd"] * args.hd, media)
        send(flood)
        time.sleep(3.0)
        sent_at: dict[str, float] = {}
        for hd in hds:
            sent_at[str(hd.pk)] = time.time()
            send([hd])
            time.sleep(0.5)
        wait_done(flood + hds, timeout=1800)
        started_events = started_times(nodes)
        run_start: dict[str, float] = {}
        for node_spans in records(nodes).values():
            for span in node_spans:
                begin = started_events.get(span.prompt_id)
                if begin is not None:
                    key = span.run.split("-run")[0]
                    run_start[key] = min(run_start.get(key, begin), begin)
        for hd in hds:
            begin = run_start.get(str(hd.pk))
            if begin is not None:
                # From the moment it was sent (paid for), not from when this benchmark made its row.
                result.hd_waits.append(begin - sent_at[str(hd.pk)])
        print(
            f"[{name}] HD during a flood: p95 wait {percentile(result.hd_waits, 0.95):.1f}s, "
            f"median {statistics.median(result.hd_waits) if result.hd_waits else float('nan'):.1f}s",
            flush=True,
        )
    finally:
        mode.close()

    if not baseline:
        overflow(result, args, nodes, media, namespace)
    return result


def describe_cpu(result: ModeResult, runs: int) -> str:
    cores = os.cpu_count() or 1
    groups = ", ".join(f"{group} {1000 * seconds / runs:.0f}" for group, seconds in sorted(result.cpu_groups.items()))
    return (
        f"CPU: the machine busy {result.cpu_machine:.1f} s of {cores} x {result.makespan:.1f} s "
        f"({100 * result.cpu_machine / (cores * result.makespan):.0f}%); ms per run: {groups}; "
        f"the cores alone need {result.cpu_machine / cores:.1f} s for this work"
    )


def node_gaps(spans: dict[str, list[Any]]) -> list[float]:
    """Per node, the seconds from one prompt's end to the queueing of the next (the node idle meanwhile)."""
    gaps: list[float] = []
    for node_spans in spans.values():
        ordered = sorted(node_spans, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            gaps.append(max(0.0, after.start - before.end))
    return gaps


def describe_gaps(gaps: list[float]) -> str:
    if not gaps:
        return "no gaps"
    return (
        f"idle between prompts: median {statistics.median(gaps) * 1000:.0f} ms, "
        f"p90 {percentile(gaps, 0.9) * 1000:.0f} ms, {sum(gaps):.1f} node-s in all"
    )


def started_times(nodes: list[Any]) -> dict[str, float]:
    """When each prompt started executing on its node (the record's ``started`` events)."""
    started: dict[str, float] = {}
    for node in nodes:
        for event in node.prompt_record():
            if event.get("event") == "started":
                started.setdefault(event["prompt_id"], event["t"])
    return started


def overflow(result: ModeResult, args: argparse.Namespace, nodes: list[Any], media: Path, namespace: str) -> None:
    from rekindle.testing.runpod_standin import RunPodStandin

    with RunPodStandin() as runpod:
        env = {
            **mode_env(False, nodes, namespace + "-overflow"),
            "OVERFLOW_AFTER_SECONDS": "2",
            "OVERFLOW_MAX_CONCURRENT": "8",
            "OVERFLOW_DAILY_GPU_SECONDS": "100000",
            "RUNPOD_BASE_URL": runpod.url,
            "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
            "RUNPOD_API_KEY": runpod.api_key,
            "RUNPOD_POLL_INTERVAL": "0.2",
        }
        print("[shared] overflow: starting workers with 12 threads", flush=True)
        mode = Mode(env, args.workers, 12)
        try:
            reset_nodes(nodes)
            burst = make_attempts(["restore"] * (8 * len(nodes)), media)
            seen: list[float] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set() and not seen:
                    if runpod.paths("POST"):
                        seen.append(time.time())
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.time()
            send(burst)
            done = wait_done(burst, timeout=1800)
            stop.set()
            result.overflow_delay = (seen[0] - started) if seen else None
            result.overflow_runs = sum(1 for row in done if row.engine == "runpod")
            result.overflow_seconds = sum(
                float(v) for row in done if row.engine == "runpod" for v in (row.node_seconds or {}).values()
            )
            reasons = sorted({row.engine_reason.split(":")[0] for row in done})
            print(
                f"[shared] overflow: first RunPod /run {result.overflow_delay}s after the burst, "
                f"{result.overflow_runs} of {len(done)} runs overflowed ({result.overflow_seconds:.1f} GPU s), "
                f"reasons {reasons}",
                flush=True,
            )
        finally:
            mode.close()


def report(
    results: list[ModeResult], args: argparse.Namespace, before: tuple[float, ...], after: tuple[float, ...]
) -> None:
    print()
    print(
        f"{args.nodes} stand-in nodes (sampler {args.exec_seconds}s, model switch {args.switch_seconds}s), "
        f"{args.workers} workers x {args.threads} threads, {args.jobs} jobs (seed {args.seed}); "
        f"{os.cpu_count()} cores, load average {before[0]:.1f} before, {after[0]:.1f} after"
    )
    print(
        f"{'mode':<10} {'makespan/ideal':>16} {'most at once':>13} {'switches vs RR':>18} "
        f"{'HD p95 wait':>12} {'failed':>7}"
    )
    for r in results:
        ratio = r.makespan / r.ideal if r.ideal else float("nan")
        share = 100.0 * r.switches / r.round_robin_switches if r.round_robin_switches else float("nan")
        print(
            f"{r.name:<10} {r.makespan:6.1f}/{r.ideal:5.1f}={ratio:4.2f} {r.most_at_once:>13} "
            f"{r.switches:>4}/{r.round_robin_switches:<4}={share:5.1f}% "
            f"{percentile(r.hd_waits, 0.95):>11.1f}s {r.failed:>7}"
        )
    for r in results:
        if r.overflow_delay is not None or r.overflow_runs:
            print(
                f"overflow ({r.name}): first RunPod run {r.overflow_delay}s after the burst, "
                f"{r.overflow_runs} runs, {r.overflow_seconds:.1f} GPU s"
            )


if __name__ == "__main__":
    main()
