"""Video outputs: anything not MP4 is re-encoded as H.264 MP4; thumbnails come from a frame."""

from __future__ import annotations

import io
from typing import Any

import av
import pytest
from PIL import Image

from animation.video import as_mp4, thumbnail_jpeg
from jobs.runner import BadInput


def animated_webp(frames: int = 6, size: tuple[int, int] = (64, 48)) -> bytes:
    images = [Image.new("RGB", size, (40 * i % 255, 100, 200 - 20 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=125, loop=0)
    return buffer.getvalue()


def test_it_reencodes_an_animated_webp_as_h264_mp4() -> None:
    mp4 = as_mp4(animated_webp(), "image/webp")

    assert mp4[4:8] == b"ftyp"
    container: Any = av.open(io.BytesIO(mp4))
    with container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == pytest.approx(8.0)
        assert len(list(container.decode(stream))) == 6


def test_it_keeps_an_mp4_as_it_is() -> None:
    mp4 = as_mp4(animated_webp(), "image/webp")

    assert as_mp4(mp4, "video/mp4") is mp4


def test_it_takes_a_jpeg_thumbnail_from_a_frame() -> None:
    thumbnail = thumbnail_jpeg(as_mp4(animated_webp(size=(64, 48)), "image/webp"))

    image = Image.open(io.BytesIO(thumbnail))
    assert (image.format, image.size) == ("JPEG", (64, 48))


def test_it_refuses_an_output_that_is_not_a_video() -> None:
    with pytest.raises(BadInput):
        as_mp4(b"definitely not a video", "video/webm")
