"""The ComfyUI engine: a pool of ComfyUI servers speaking the protocol of ComfyUI 0.3.64.

``protocol`` reads websocket messages and history entries, ``client`` talks HTTP and
websocket to one server and sorts its failures, ``preflight`` checks a graph against a
server's ``/object_info``, ``scheduler`` chooses nodes and keeps their state (``fleet``: in
Redis, for every worker process), ``prompt`` follows one prompt on one node, ``overflow``
admits runs to RunPod, ``metrics`` counts it all, and ``pool`` runs graphs end to end over them.
"""

from __future__ import annotations

from rekindle.engines.comfyui.config import PoolConfig
from rekindle.engines.comfyui.pool import ComfyNodePool, fleet_nodes_up, get_pool
from rekindle.engines.comfyui.scheduler import LocalNodeScheduler, NodeScheduler, NodeView, Slot

__all__ = [
    "ComfyNodePool",
    "LocalNodeScheduler",
    "NodeScheduler",
    "NodeView",
    "PoolConfig",
    "Slot",
    "fleet_nodes_up",
    "get_pool",
]
