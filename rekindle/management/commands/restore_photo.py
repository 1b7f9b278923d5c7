"""Restore one photo end to end through the configured engine, from the command line, without the web server.

    manage.py restore_photo old.jpg                     # writes old_restored.jpg
    manage.py restore_photo old.jpg --out better.jpg --animate --param seed=7

The photo goes through the same checks and normalization as an upload (formats,
size and pixel limits, EXIF orientation, sRGB), then the restore workflow the settings
choose runs on the engine the settings choose (``REKINDLE_ENGINE``: the local CPU
engine by default, a ComfyUI node pool or RunPod in production), with a progress bar on
stderr. ``--animate`` then animates the restored image with the preview workflow and
writes an MP4 beside it. Nothing is stored in the database or in the bucket: it is the
quickest way to see the product work, or to try a node from an operator's shell.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from rekindle.engines import get_engine
from rekindle.engines.base import EngineError, EngineResult, InputImage, RunRequest
from rekindle.errors import ServiceError
from rekindle.images import normalize_image
from rekindle.workflows import Workflow, WorkflowParameterError, workflow_for_kind


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["seed=7", "prompt=a warm summer day"]`` -> ``{"seed": 7, "prompt": "a warm summer day"}``.

    Each value is read as JSON when it parses (numbers, booleans) and as text otherwise.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--param takes NAME=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[name.strip()] = value
    return params


class Command(BaseCommand):
    help = "Restore one photo (and with --animate, animate it) through the configured engine, with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The photo to restore (JPEG, PNG, WebP, TIFF or BMP).")
        parser.add_argument(
            "--out", type=Path, default=None, help="Where to write the JPEG (default: NAME_restored.jpg)."
        )
        parser.add_argument("--animate", action="store_true", help="Also animate the restored photo into an MP4.")
        parser.add_argument(
            "--animation-out", type=Path, default=None, help="Where to write the MP4 (default: NAME_animated.mp4)."
        )
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A restore workflow parameter, e.g. seed=7 (repeatable).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (for logs).")

    def handle(
        self,
        *args: Any,
        path: Path,
        out: Path | None,
        animate: bool,
        animation_out: Path | None,
        param: list[str],
        no_progress: bool,
        **options: Any,
    ) -> None:
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        out = out or path.with_name(f"{path.stem}_restored.jpg")
        self.show_progress = not no_progress

        with path.open("rb") as handle:
            try:
                normalized = normalize_image(handle)
            except ServiceError as exc:
                raise CommandError(f"{path}: {exc.message}") from None
        try:
            original = normalized.file.read()
        finally:
            normalized.close()
        self.stdout.write(
            f"{path.name}: {normalized.source_format} {normalized.width}x{normalized.height}; "
            f"engine {settings.REKINDLE_ENGINE}"
        )

        from restoration.services import as_jpeg

        restore = workflow_for_kind("restore")
        result, seconds = self.run(restore, parse_params(param), f"photo.{normalized.format}", original)
        restored = as_jpeg(result.first("image").data)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(restored)
        self.stdout.write(
            f"Restored {path.name} -> {out} ({len(restored):,} bytes) with {restore.name} "
            f"on {result.engine} node {result.node} in {seconds:.1f} s"
        )
        if not animate:
            return

        from animation.video import as_mp4

        movie_out = animation_out or out.with_name(f"{path.stem}_animated.mp4")
        preview = workflow_for_kind("animate_preview")
        result, seconds = self.run(preview, {}, "restored.jpg", restored)
        video = result.first("video")
        movie = as_mp4(video.data, video.content_type)
        movie_out.write_bytes(movie)
        self.stdout.write(
            f"Animated -> {movie_out} ({len(movie):,} bytes) with {preview.name} "
            f"on {result.engine} node {result.node} in {seconds:.1f} s"
        )

    def run(self, workflow: Workflow, params: dict[str, Any], filename: str, data: bytes) -> tuple[EngineResult, float]:
        try:
            validated = workflow.validate(params)
        except WorkflowParameterError as exc:
            raise CommandError(f"{workflow.name}: {exc.message} {exc.fields}") from None
        request = RunRequest(
            workflow=workflow.name,
            run_id=f"cli-{uuid.uuid4().hex[:12]}",
            images=tuple(InputImage(param=name, filename=filename, data=data) for name in workflow.image_params),
            params=validated,
            timeout=float(workflow.timeout_seconds),
        )
        bar = tqdm(
            total=100,
            desc=workflow.name,
            unit="%",
            file=sys.stderr,
            disable=not self.show_progress,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
        )
        started = time.monotonic()

        def on_progress(percent: int) -> None:
            bar.update(max(0, min(100, percent) - bar.n))

        def on_submitted(node: str, prompt_id: str) -> None:
            bar.set_postfix_str(f"{node} {prompt_id}", refresh=True)

        try:
            result = get_engine().run(request, on_progress=on_progress, on_submitted=on_submitted)
        except EngineError as exc:
            raise CommandError(f"{workflow.name} failed: {exc.code}: {exc.message}") from None
        finally:
            bar.close()
        return result, time.monotonic() - started
