"""Video outputs of animation runs: stored as H.264 MP4, with a JPEG thumbnail taken from a frame (PyAV).

ComfyUI may hand back an MP4 (``SaveVideo``), another container (WebM), or an animated
image (``SaveAnimatedWEBP``, GIF); anything that is not already MP4 is re-encoded, so
every preview and HD result plays in a browser's ``<video>``.
"""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from jobs.runner import BadInput

DEFAULT_FPS = 16
THUMBNAIL_MAX_SIDE = 640


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def as_mp4(data: bytes, content_type: str) -> bytes:
    """``data`` as H.264 MP4: returned as is when it already is MP4, re-encoded otherwise."""
    if is_mp4(data):
        return data
    if content_type.startswith("image/") or data[:4] in (b"RIFF", b"GIF8"):
        frames, fps = _image_frames(data)
    else:
        frames, fps = _video_frames(data)
    if not frames:
        raise BadInput("invalid_output", "The engine's video output has no frames.")
    return _encode(frames, fps)


def _image_frames(data: bytes) -> tuple[list[Image.Image], Fraction]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
            duration_ms = image.info.get("duration") or 0
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput("invalid_output", f"The engine's animation cannot be read: {exc}") from None
    fps = Fraction(1000, int(duration_ms)).limit_denominator(1000) if duration_ms else Fraction(DEFAULT_FPS)
    return frames, fps


def _video_frames(data: bytes) -> tuple[list[Image.Image], Fraction]:
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            fps = Fraction(stream.average_rate or DEFAULT_FPS)
            frames = [Image.fromarray(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    except (av.FFmpegError, IndexError) as exc:
        raise BadInput("invalid_output", f"The engine's video cannot be decoded: {exc}") from None
    return frames, fps


def _encode(frames: list[Image.Image], fps: Fraction) -> bytes:
    width, height = (frames[0].width // 2) * 2, (frames[0].height // 2) * 2
    # A real file: +faststart rewrites it after encoding, which FFmpeg does by reopening it by name.
    with tempfile.TemporaryDirectory(prefix="rekindle-video-") as directory:
        path = Path(directory) / "video.mp4"
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream: Any = container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            for image in frames:
                if image.size != (width, height):
                    image = image.crop((0, 0, width, height))
                video_frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
                for packet in stream.encode(video_frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        return path.read_bytes()


def thumbnail_jpeg(mp4: bytes) -> bytes:
    """A JPEG of the frame a third of the way in (the first frame of a pan is often the dullest)."""
    try:
        with av.open(io.BytesIO(mp4), mode="r") as container:
            stream = container.streams.video[0]
            target = max(int(stream.frames or 0) // 3, 0)
            chosen = None
            for index, frame in enumerate(container.decode(stream)):
                chosen = frame
                if index >= target:
                    break
    except (av.FFmpegError, IndexError) as exc:
        raise BadInput("invalid_output", f"The video cannot be decoded for a thumbnail: {exc}") from None
    if chosen is None:
        raise BadInput("invalid_output", "The video has no frames to take a thumbnail from.")
    image = Image.fromarray(chosen.to_ndarray(format="rgb24"))
    image.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()
