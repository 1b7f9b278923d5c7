"""A pan-and-zoom ("Ken Burns") MP4 of a still photo, encoded as H.264 with PyAV.

The camera starts on the whole picture (cropped to the video's aspect) and glides in
towards the upper middle, where faces usually are, slowing gently at both ends.
Each frame is one affine warp of the source, so the motion is sub-pixel smooth.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

# OpenCV's stubs type images loosely (any integer or float dtype); these hold 8-bit pixels.
Array = npt.NDArray[Any]
# Called with (frames written, total frames) after every group of frames; may raise to stop.
FrameCallback = Callable[[int, int], None]

# How far the camera moves in: the last frame shows 1/ZOOM of the first one's width.
ZOOM = 1.18
# Where it moves to, as a fraction of the picture (x, y): the middle, a little above centre.
FOCUS = (0.5, 0.4)


@dataclass(frozen=True)
class VideoSettings:
    width: int
    height: int
    fps: int
    frames: int
    crf: int = 21


def _even(value: int) -> int:
    # yuv420p halves the chroma planes, so both sides must be even.
    return max(2, value - value % 2)


def _ease(t: float) -> float:
    # Mostly ease-in-out, with a little constant speed so the camera never quite stands still.
    return 0.25 * t + 0.75 * (0.5 - 0.5 * math.cos(math.pi * t))


def camera_rect(source_w: int, source_h: int, aspect: float, t: float) -> tuple[float, float, float, float]:
    """The source rectangle (x, y, w, h) the camera shows at time ``t`` in 0..1."""
    if source_w / source_h > aspect:
        full_h = float(source_h)
        full_w = full_h * aspect
    else:
        full_w = float(source_w)
        full_h = full_w / aspect
    progress = _ease(t)
    zoom = 1.0 + (ZOOM - 1.0) * progress
    w, h = full_w / zoom, full_h / zoom
    start_x, start_y = (source_w - full_w) / 2, (source_h - full_h) / 2
    # Aim the centre at the focus point, kept inside the picture.
    end_x = min(max(FOCUS[0] * source_w - w / 2, 0.0), source_w - w)
    end_y = min(max(FOCUS[1] * source_h - h / 2, 0.0), source_h - h)
    x = start_x + (end_x - start_x) * progress
    y = start_y + (end_y - start_y) * progress
    return x, y, w, h


def render_frame(source: Array, rect: tuple[float, float, float, float], width: int, height: int) -> Array:
    x, y, w, h = rect
    scale_x, scale_y = width / w, height / h
    matrix = np.array([[scale_x, 0.0, -x * scale_x], [0.0, scale_y, -y * scale_y]], dtype=np.float64)
    # Shrinking a large photo to video size: pre-blur enough to avoid shimmering edges.
    shrink = min(scale_x, scale_y)
    if shrink < 0.5:
        source = cv2.GaussianBlur(source, (0, 0), 0.5 / shrink)
    return cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def ken_burns_mp4(image_bgr: Array, settings: VideoSettings, on_frames: FrameCallback) -> bytes:
    """The MP4 bytes of the pan-and-zoom over ``image_bgr``."""
    width, height = _even(settings.width), _even(settings.height)
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    # Pre-shrink very large sources once, rather than blurring a huge image for every frame.
    limit = 2.0 * max(width, height) * ZOOM
    longest = max(rgb.shape[:2])
    if longest > limit:
        factor = limit / longest
        rgb = cv2.resize(
            rgb, (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor)), interpolation=cv2.INTER_AREA
        )

    # A real file, because +faststart (the index up front, so browsers can start playing at once)
    # rewrites the file after encoding, which FFmpeg does by reopening it by name.
    with tempfile.TemporaryDirectory(prefix="rekindle-video-") as directory:
        path = Path(directory) / "video.mp4"
        _encode(rgb, settings, width, height, path, on_frames)
        return path.read_bytes()


def _encode(rgb: Array, settings: VideoSettings, width: int, height: int, path: Path, on_frames: FrameCallback) -> None:
    source_h, source_w = rgb.shape[:2]
    aspect = width / height
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(settings.fps))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(settings.crf), "preset": "veryfast"}
        group = max(1, settings.frames // 10)
        for index in range(settings.frames):
            t = index / (settings.frames - 1) if settings.frames > 1 else 0.0
            frame = render_frame(rgb, camera_rect(source_w, source_h, aspect, t), width, height)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            if (index + 1) % group == 0 or index + 1 == settings.frames:
                on_frames(index + 1, settings.frames)
        for packet in stream.encode(None):
            container.mux(packet)
