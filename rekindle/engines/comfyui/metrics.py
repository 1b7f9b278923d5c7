"""Prometheus metrics of the GPU fleet: nodes, slots, waiting runs, GPU seconds, overflow, the fleet state's backend.

Defined once here, on prometheus_client's default registry, and updated by the scheduler,
the pool and the overflow; ``/metrics`` (``rekindle.ops``) and the workers' exposition server
show them. With ``PROMETHEUS_MULTIPROC_DIR`` every process writes its values there and a scrape
combines them: counters and histograms add up; a gauge of node state is the value the most
recent live process wrote (``livemostrecent``: with the shared fleet state they all see the same
fleet), runs waiting add up over live processes, and the outage and the state backend show 1 when
any live process sees it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NODE_UP = Gauge(
    "rekindle_comfyui_node_up",
    "1 while the ComfyUI node answers, 0 while it is down.",
    ["node"],
    multiprocess_mode="livemostrecent",
)
NODE_DRAINING = Gauge(
    "rekindle_comfyui_node_draining", "1 while staff drain the node.", ["node"], multiprocess_mode="livemostrecent"
)
NODE_SLOTS_IN_USE = Gauge(
    "rekindle_comfyui_node_slots_in_use",
    "Our prompts on the node (the fleet's, with shared state).",
    ["node"],
    multiprocess_mode="livemostrecent",
)
NODE_QUEUE_LENGTH = Gauge(
    "rekindle_comfyui_node_queue_length",
    "Prompts queued or running on the node, ours and foreign.",
    ["node"],
    multiprocess_mode="livemostrecent",
)
NODE_GPU_SECONDS = Counter(
    "rekindle_comfyui_node_gpu_seconds_total", "Seconds nodes spent executing our prompts, every try.", ["node"]
)
FLEET_UP_NODES = Gauge(
    "rekindle_fleet_nodes_up", "ComfyUI nodes up, as a process last saw them.", multiprocess_mode="livemostrecent"
)
FLEET_OUTAGE = Gauge(
    "rekindle_fleet_outage", "1 while no ComfyUI node is up and runs wait for one.", multiprocess_mode="livemax"
)
WAITING_RUNS = Gauge(
    "rekindle_fleet_waiting_runs", "Runs waiting for a node slot.", ["priority"], multiprocess_mode="livesum"
)
WAITING_FOR_NODE_SECONDS = Histogram(
    "rekindle_fleet_slot_wait_seconds",
    "How long runs waited for a node slot.",
    ["priority"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
OUTAGE_WAITS = Counter("rekindle_fleet_outage_waits_total", "Runs that waited through a fleet outage.", ["outcome"])
FLEET_BACKEND = Gauge(
    "rekindle_fleet_state_backend",
    "1 for where a process keeps the fleet's state now (both 1: some fell back to their own).",
    ["backend"],
    multiprocess_mode="livemax",
)
FLEET_REDIS_LOST = Counter(
    "rekindle_fleet_redis_lost_total", "Times this process lost Redis and fell back to its own node state."
)
OVERFLOW_RUNS = Counter("rekindle_overflow_runs_total", "Runs sent to RunPod instead of the own pool.", ["reason"])
OVERFLOW_REFUSED = Counter(
    "rekindle_overflow_refused_total", "Runs that would have overflowed but waited for the own pool.", ["reason"]
)
OVERFLOW_GPU_SECONDS = Counter("rekindle_overflow_gpu_seconds_total", "GPU seconds spent on RunPod by overflow.")
OVERFLOW_COST = Counter(
    "rekindle_overflow_cost_total", "What overflow spent on RunPod, at OVERFLOW_COST_PER_GPU_SECOND."
)
