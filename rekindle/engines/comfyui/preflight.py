"""Checks a workflow graph against a node's ``/object_info`` before it is sent: node classes and model files.

ComfyUI rejects some missing files only when the prompt runs, after minutes of loading;
checking here fails fast, with a message that names what is missing and where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Inputs whose files we upload ourselves right before sending, so they are never in the list yet.
_UPLOADED_INPUTS = {("LoadImage", "image"), ("LoadImageMask", "image"), ("LoadVideo", "file")}


def input_choices(spec: Any) -> list[Any] | None:
    """The allowed values of an input as ``/object_info`` declares them, or None if it is not a list.

    Two spellings exist in 0.3.64: the classic ``[[choice, ...], {...}]`` and the newer
    ``["COMBO", {"options": [...]}]``.
    """
    if not isinstance(spec, list | tuple) or not spec:
        return None
    head = spec[0]
    if isinstance(head, list):
        return head
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        options = spec[1].get("options")
        return list(options) if isinstance(options, list) else None
    return None


def _uploads_itself(spec: Any) -> bool:
    return (
        isinstance(spec, list | tuple)
        and len(spec) > 1
        and isinstance(spec[1], Mapping)
        and bool(spec[1].get("image_upload") or spec[1].get("video_upload"))
    )


def check_graph(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Problems that stop ``graph`` from running on a node with this ``object_info`` (empty: it can run)."""
    problems: list[str] = []
    for node_id, node in graph.items():
        if not isinstance(node, Mapping):
            problems.append(f"node {node_id}: not a node")
            continue
        class_type = str(node.get("class_type", ""))
        info = object_info.get(class_type)
        if not isinstance(info, Mapping):
            problems.append(f"node {node_id}: node class {class_type} is not installed")
            continue
        declared = info.get("input") if isinstance(info.get("input"), Mapping) else {}
        assert isinstance(declared, Mapping)
        specs: dict[str, Any] = {}
        for section in ("required", "optional"):
            part = declared.get(section)
            if isinstance(part, Mapping):
                specs.update(part)
        inputs = node.get("inputs") if isinstance(node.get("inputs"), Mapping) else {}
        assert isinstance(inputs, Mapping)
        for name, value in inputs.items():
            if not isinstance(value, str) or (class_type, name) in _UPLOADED_INPUTS:
                continue
            spec = specs.get(name)
            if _uploads_itself(spec):
                continue
            choices = input_choices(spec)
            if choices is not None and value not in choices:
                problems.append(f"node {node_id} ({class_type}): {name} {value!r} is not available on this node")
    return problems
