"""Processing engines: the ComfyUI node pool, RunPod serverless and the local CPU engine.

``get_engine()`` returns the engine named by the ``REKINDLE_ENGINE`` setting.
"""

from __future__ import annotations

from rekindle.engines.base import Engine


def get_engine(name: str | None = None) -> Engine:
    """The configured engine (or the one named), built from settings."""
    from django.conf import settings

    name = name or settings.REKINDLE_ENGINE
    if name == "local":
        from rekindle.engines.local import LocalEngine

        return LocalEngine()
    if name == "comfyui":
        from rekindle.engines.comfyui import get_pool

        return get_pool()
    if name == "runpod":
        from rekindle.engines.runpod import RunPodEngine

        return RunPodEngine.from_settings()
    raise ValueError(f"Unknown engine {name!r}")
