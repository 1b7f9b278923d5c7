"""How the ComfyUI pool behaves: ``PoolConfig``, read from the ``COMFYUI_*`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolConfig:
    """How the pool behaves; ``from_settings()`` reads the ``COMFYUI_*`` settings."""

    urls: tuple[str, ...]
    prompts_per_node: int = 1
    # No websocket message for this long: stop listening and poll /history and /queue instead.
    socket_quiet_seconds: float = 30.0
    poll_seconds: float = 1.0
    # A node that stopped answering is probed again after this, doubling up to the maximum.
    # A node that says it is busy without saying for how long is left alone for the first value.
    node_backoff_seconds: float = 5.0
    node_backoff_max_seconds: float = 300.0
    http_timeout: float = 30.0
    # How long a run waits for a free slot on some node before giving up (transient).
    slot_wait_seconds: float = 60.0
    # How long a run waits for a busy node that has its workflow's models loaded before it
    # takes a free node that would have to switch models.
    affinity_wait_seconds: float = 10.0
    # Runs lost on a node (it died or restarted) are sent again this many times.
    max_resubmits: int = 2
    # Workflow kind -> seconds; a kind not listed uses the workflow file's own timeout.
    kind_timeouts: Mapping[str, float] = field(default_factory=dict)
    client_name: str = ""
    # Polls in a row that a node answers with a server error before the run gives up on it.
    poll_failures: int = 3
    # How long a stopped prompt may still show in a node's /queue before the run stops
    # waiting; the run then goes to no other node (``stop_unconfirmed``).
    stop_confirm_seconds: float = 30.0
    # Short timeout of the calls that only ask whether a node is alive and where our prompt is
    # (probes, /queue, /history while polling): a hung node is noticed in seconds, not minutes.
    probe_timeout: float = 3.0
    # Socket silence after which the run asks the node (with ``probe_timeout``) whether it still answers.
    liveness_seconds: float = 5.0
    # A node's /queue read by any process is trusted this long; older, the next choice reads it again.
    queue_fresh_seconds: float = 1.0
    # While no node is up, a run waits this long for one (its tries unspent) before it fails.
    outage_wait_seconds: float = 300.0
    # Node slots of the whole fleet kept for paid HD runs: free previews and restores never take the last ones.
    reserved_paid_slots: int = 1
    # Where the fleet's state lives: "redis" (shared by every worker process) or "local" (this process).
    fleet_state: str = "local"
    redis_url: str = ""
    fleet_namespace: str = "rekindle"
    # A slot taken by a worker that died comes back after this (the holder renews it every third).
    slot_lease_seconds: float = 30.0
    # Remove our uploaded inputs and fetched outputs from the node after each run.
    clean_node_files: bool = True

    @classmethod
    def from_settings(cls) -> PoolConfig:
        from django.conf import settings

        return cls(
            urls=tuple(settings.COMFYUI_URLS),
            prompts_per_node=settings.COMFYUI_PROMPTS_PER_NODE,
            socket_quiet_seconds=settings.COMFYUI_SOCKET_QUIET_SECONDS,
            poll_seconds=settings.COMFYUI_POLL_SECONDS,
            node_backoff_seconds=settings.COMFYUI_NODE_BACKOFF_SECONDS,
            node_backoff_max_seconds=settings.COMFYUI_NODE_BACKOFF_MAX_SECONDS,
            http_timeout=settings.COMFYUI_HTTP_TIMEOUT,
            slot_wait_seconds=settings.COMFYUI_SLOT_WAIT_SECONDS,
            affinity_wait_seconds=settings.COMFYUI_AFFINITY_WAIT_SECONDS,
            max_resubmits=settings.COMFYUI_MAX_RESUBMITS,
            kind_timeouts={kind: seconds for kind, seconds in settings.COMFYUI_TIMEOUTS.items() if seconds > 0},
            client_name=settings.COMFYUI_CLIENT_NAME,
            # Not settings yet: the defaults above unless a deployment defines them.
            poll_failures=settings.COMFYUI_POLL_FAILURES,
            stop_confirm_seconds=settings.COMFYUI_STOP_CONFIRM_SECONDS,
            probe_timeout=settings.COMFYUI_PROBE_TIMEOUT_SECONDS,
            liveness_seconds=settings.COMFYUI_LIVENESS_SECONDS,
            queue_fresh_seconds=settings.COMFYUI_QUEUE_FRESH_SECONDS,
            outage_wait_seconds=settings.FLEET_OUTAGE_WAIT_SECONDS,
            reserved_paid_slots=settings.FLEET_RESERVED_PAID_SLOTS,
            fleet_state=settings.FLEET_STATE,
            redis_url=settings.REDIS_URL or "",
            fleet_namespace=settings.FLEET_NAMESPACE,
            slot_lease_seconds=settings.FLEET_SLOT_LEASE_SECONDS,
            clean_node_files=settings.COMFYUI_CLEAN_NODE_FILES,
        )


@dataclass(frozen=True)
class OverflowConfig:
    """When a run leaves the own pool for RunPod; ``from_settings()`` reads the ``OVERFLOW_*`` settings.

    Off (``after_seconds`` 0, or no RunPod endpoint) the pool never overflows.
    """

    after_seconds: float = 0.0
    max_concurrent: int = 0
    daily_gpu_seconds: float = 0.0
    cost_per_gpu_second: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.after_seconds > 0 and self.max_concurrent > 0 and self.daily_gpu_seconds > 0

    @classmethod
    def from_settings(cls) -> OverflowConfig:
        from django.conf import settings

        if not (settings.RUNPOD_ENDPOINT_ID and settings.RUNPOD_API_KEY):
            return cls()
        return cls(
            after_seconds=settings.OVERFLOW_AFTER_SECONDS,
            max_concurrent=settings.OVERFLOW_MAX_CONCURRENT,
            daily_gpu_seconds=settings.OVERFLOW_DAILY_GPU_SECONDS,
            cost_per_gpu_second=settings.OVERFLOW_COST_PER_GPU_SECOND,
        )
