"""The ComfyUI engine: a pool of ComfyUI servers speaking the protocol of ComfyUI 0.3.64.

``protocol`` reads websocket messages and history entries, ``client`` talks HTTP and
websocket to one server, ``preflight`` checks a graph against a server's ``/object_info``,
and ``pool`` chooses nodes and runs graphs end to end.
"""

from __future__ import annotations

from rekindle.engines.comfyui.pool import ComfyNodePool, NodeState, PoolConfig, get_pool

__all__ = ["ComfyNodePool", "NodeState", "PoolConfig", "get_pool"]
