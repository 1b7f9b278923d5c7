"""rekindle_files: a ComfyUI extension that lets Rekindle remove its files from a GPU node and read its disk.

ComfyUI 0.3.64 has no route that deletes an input or an output, nor one that reports disk
space, so uploaded photos and generated images and videos pile up on a node until its disk
is full. Copy this folder into the node's ``ComfyUI/custom_nodes/`` (the GPU image does) and
restart ComfyUI; it adds two routes next to ComfyUI's own:

- ``POST /rekindle/files/delete`` with ``{"files": [{"type": "input"|"output"|"temp",
  "subfolder": "...", "filename": "..."}]}`` removes those files (only inside ComfyUI's own
  input, output and temp folders) and answers ``{"removed": n}``; 400 for a path outside them.
- ``GET /rekindle/disk`` answers ``{"total", "used", "free"}`` (bytes, the output folder's
  file system) and ``{"files": {"input": n, "output": n}}``.

It defines no node classes. The pool calls the first after every run
(``COMFYUI_CLEAN_NODE_FILES``); the admin's nodes page shows the second. A node without
the extension answers 404 on both, and the pool then leaves its files alone (and says so).
The stand-in (``rekindle/testing/comfyui_standin``) serves the same routes.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

NODE_CLASS_MAPPINGS: dict[str, Any] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}


def _folders() -> dict[str, str]:
    import folder_paths  # type: ignore[import-not-found]  # ComfyUI's own module, on the node only

    return {
        "input": folder_paths.get_input_directory(),
        "output": folder_paths.get_output_directory(),
        "temp": folder_paths.get_temp_directory(),
    }


def _resolve(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    base = _folders().get(str(item.get("type") or "output"))
    filename = os.path.basename(str(item.get("filename") or ""))
    if base is None or not filename:
        return None
    base = os.path.realpath(base)
    path = os.path.realpath(os.path.join(base, str(item.get("subfolder") or ""), filename))
    return path if os.path.commonpath((path, base)) == base else None


def _count(folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _register() -> None:
    try:
        from aiohttp import web
        from server import PromptServer  # type: ignore[import-not-found]  # ComfyUI's own module
    except ImportError:  # imported outside ComfyUI (tests, linters): nothing to register
        return

    routes = PromptServer.instance.routes

    @routes.post("/rekindle/files/delete")  # type: ignore[untyped-decorator]
    async def delete_files(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        removed = 0
        for item in body.get("files") or [] if isinstance(body, dict) else []:
            path = _resolve(item)
            if path is None:
                return web.json_response({"error": f"not a file in input, output or temp: {item!r}"}, status=400)
            if os.path.isfile(path):
                os.remove(path)
                removed += 1
        return web.json_response({"removed": removed})

    @routes.get("/rekindle/disk")  # type: ignore[untyped-decorator]
    async def disk(request: web.Request) -> web.Response:
        folders = _folders()
        usage = shutil.disk_usage(folders["output"])
        return web.json_response(
            {
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "files": {"input": _count(folders["input"]), "output": _count(folders["output"])},
            }
        )


_register()
