"""The local CPU engine: classical restoration and pan-and-zoom animation in this process, for development.

It is the embedded default, so a fresh checkout restores and animates photos with no GPU and
no ComfyUI. It reads only a workflow's kind and parameter map (never its graph): restore
workflows run ``restore.restore_image`` and give a JPEG; animation workflows run
``animate.ken_burns_mp4`` on the (already restored) input and give an H.264 MP4 with the
parameters' seconds, fps and size. Of the restore parameters it uses ``megapixels`` and
``denoise`` (the strength of the filters); prompt, seed, steps and guidance have no meaning
here. Results are labelled as coming from this engine (``LocalEngine.label``, the engine name
``"local"`` and the JPEG's EXIF Software tag): they are classical filters, not AI restoration.
"""

from __future__ import annotations

import re
import time
from typing import Any

import av
import cv2

from rekindle.engines import ENGINE_LABELS
from rekindle.engines.base import (
    NO_HOOKS,
    CancelCheck,
    EngineCanceled,
    EngineOutput,
    EngineResult,
    NodeHealth,
    PermanentEngineError,
    ProgressCallback,
    RunHooks,
    RunRequest,
    SubmittedCallback,
    TransientEngineError,
)
from rekindle.engines.local.animate import VideoSettings, ken_burns_mp4
from rekindle.engines.local.restore import BadImageError, RestoreSettings, decode_image, encode_jpeg, restore_image
from rekindle.workflows import Workflow, WorkflowParameterError, all_workflows, get_workflow, wan_frames

NODE = "local"


class LocalEngine:
    """Runs workflows on this machine's CPU with OpenCV, Pillow and PyAV."""

    name = "local"
    label = ENGINE_LABELS["local"]

    def run(
        self,
        request: RunRequest,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_submitted: SubmittedCallback | None = None,
        hooks: RunHooks = NO_HOOKS,
    ) -> EngineResult:
        started = time.monotonic()
        deadline = started + request.timeout
        last_progress = -1

        def checkpoint(percent: int) -> None:
            nonlocal last_progress
            if should_cancel is not None and should_cancel():
                raise EngineCanceled("canceled", "The run was canceled.")
            if time.monotonic() > deadline:
                raise TransientEngineError(
                    "timeout", f"The local engine did not finish within {request.timeout:g} seconds."
                )
            percent = max(0, min(100, percent))
            if on_progress is not None and percent != last_progress:
                last_progress = percent
                on_progress(percent)

        workflow = _workflow(request.workflow)
        params = _params(workflow, request.params)
        if on_submitted is not None:
            on_submitted(NODE, request.run_id)
        try:
            checkpoint(0)
            source = _input_image(request)
            try:
                image = decode_image(source)
            except BadImageError as exc:
                raise PermanentEngineError("invalid_input", str(exc)) from exc
            checkpoint(5)
            if workflow.output_kind == "image":
                output = self._restore(request, image, params, checkpoint)
            else:
                output = self._animate(request, image, params, checkpoint)
            checkpoint(100)
        except MemoryError as exc:
            raise TransientEngineError("out_of_memory", "The local engine ran out of memory.") from exc
        except cv2.error as exc:
            raise PermanentEngineError("processing_failed", f"Image processing failed: {exc}") from exc
        return EngineResult(
            outputs=(output,),
            engine=self.name,
            node=NODE,
            prompt_id=request.run_id,
            execution_seconds=time.monotonic() - started,
        )

    def _restore(self, request: RunRequest, image: Any, params: dict[str, Any], checkpoint: Any) -> EngineOutput:
        settings = RestoreSettings(
            megapixels=float(params.get("megapixels", 1.0)), strength=float(params.get("denoise", 1.0))
        )
        restored, _ = restore_image(image, settings, lambda _step, done: checkpoint(5 + round(done * 85)))
        data = encode_jpeg(restored, quality=settings.jpeg_quality, software=f"Rekindle {self.label}")
        return EngineOutput(filename=f"{_safe(request.run_id)}.jpg", data=data, kind="image", content_type="image/jpeg")

    def _animate(self, request: RunRequest, image: Any, params: dict[str, Any], checkpoint: Any) -> EngineOutput:
        height, width = image.shape[:2]
        fps = int(params.get("fps", 16))
        video = VideoSettings(
            width=int(params.get("width", width)),
            height=int(params.get("height", height)),
            fps=fps,
            frames=wan_frames(float(params.get("seconds", 2.0)), fps),
        )
        data = ken_burns_mp4(image, video, lambda done, total: checkpoint(5 + round(90 * done / total)))
        return EngineOutput(filename=f"{_safe(request.run_id)}.mp4", data=data, kind="video", content_type="video/mp4")

    def health(self) -> list[NodeHealth]:
        problems = _h264_problems()
        preflight = {
            workflow.name: (problems if workflow.output_kind == "video" else []) for workflow in all_workflows()
        }
        return [
            NodeHealth(
                node=NODE,
                healthy=True,
                detail=f"{self.label}: OpenCV {cv2.__version__}, PyAV {av.__version__}",
                preflight=preflight,
            )
        ]

    def cancel(self, node: str, prompt_id: str) -> None:
        """Nothing to do: the run is in the worker's own process, and a cancel reaches it through the
        attempt's status, which the worker's heartbeat reads and ``should_cancel`` answers from."""


def _workflow(name: str) -> Workflow:
    try:
        return get_workflow(name)
    except KeyError:
        raise PermanentEngineError("unknown_workflow", f"There is no workflow named {name!r}.") from None


def _params(workflow: Workflow, params: Any) -> dict[str, Any]:
    try:
        return workflow.validate(params)
    except WorkflowParameterError as exc:
        raise PermanentEngineError("invalid_parameters", exc.message, {"fields": exc.fields}) from exc


def _input_image(request: RunRequest) -> bytes:
    for image in request.images:
        if image.param == "image":
            return image.data
    raise PermanentEngineError("missing_input", "The run has no input image.")


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:100] or "output"


def _h264_problems() -> list[str]:
    try:
        av.codec.Codec("libx264", "w")
    except Exception as exc:  # PyAV raises several types for a codec its FFmpeg lacks
        return [f"PyAV has no H.264 encoder (libx264): {exc}"]
    return []
