"""Processing engines: the ComfyUI node pool, RunPod serverless and the local CPU engine.

``get_engine()`` returns the engine named by the ``REKINDLE_ENGINE`` setting.
"""

from __future__ import annotations

from rekindle.engines.base import Engine

# How each engine is named wherever its results show (API, admin, emails). The local engine
# is for development and demos: its results must never pass for a GPU restoration.
ENGINE_LABELS = {
    "local": "Local CPU engine (development)",
    "comfyui": "ComfyUI GPU node",
    "runpod": "RunPod serverless GPU",
}


# What ran when the workflow is a CPU twin (core nodes only, no model): no GPU did the work.
CPU_TWIN_LABELS = {
    "comfyui": "ComfyUI node, CPU test workflow",
    "runpod": "RunPod serverless, CPU test workflow",
}


def engine_label(name: str, *, workflow: str = "") -> str:
    """The label of the engine ``name`` (an attempt's ``engine``) for ``workflow``; empty before it has run."""
    if workflow and name in CPU_TWIN_LABELS and _is_cpu_twin(workflow):
        return CPU_TWIN_LABELS[name]
    return ENGINE_LABELS.get(name, name)


def _is_cpu_twin(workflow: str) -> bool:
    from rekindle.workflows import get_workflow

    try:
        return bool(get_workflow(workflow).twin_of)
    except Exception:  # a workflow removed since, or a workflow file that no longer loads
        return workflow.endswith("_cpu")


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
