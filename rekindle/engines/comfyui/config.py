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
        )
