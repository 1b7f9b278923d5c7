"""The local CPU engine: measurable restoration effects, a real H.264 MP4, progress, cancel, timeout, bad input."""

from __future__ import annotations

import io
import itertools
from typing import Any

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from rekindle.engines import get_engine
from rekindle.engines.base import (
    EngineCanceled,
    EngineResult,
    InputImage,
    PermanentEngineError,
    RunRequest,
    TransientEngineError,
)
from rekindle.engines.local import LocalEngine
from rekindle.workflows import wan_frames

WIDTH, HEIGHT = 640, 480


def smooth_photo(*, gray: bool = False) -> np.ndarray:
    """A smooth BGR picture: slow waves of light, like an out-of-focus print background."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    light = 110 + 50 * np.sin(x / 120.0) + 30 * np.cos(y / 90.0)
    tint = (0.0, 0.0, 0.0) if gray else (-15.0, 0.0, 20.0)
    image: np.ndarray = np.clip(np.stack([light + t for t in tint], axis=2), 0, 255).astype(np.uint8)
    return image


def textured_photo() -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    light = 120 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0) + 30 * np.sin((x + y) / 41.0)
    image: np.ndarray = np.clip(np.stack([light, light * 0.9, light * 0.8], axis=2), 0, 255).astype(np.uint8)
    return image


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[:, :, ::-1])).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_bgr(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
    if size is not None and image.shape[1::-1] != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image.astype(np.float64)


def run(workflow: str, image: bytes, params: dict[str, Any] | None = None, **kwargs: Any) -> EngineResult:
    request = RunRequest(
        workflow=workflow,
        run_id=kwargs.pop("run_id", "attempt-1.try-1"),
        images=(InputImage(param="image", filename="photo.png", data=image),),
        params=params or {},
        timeout=kwargs.pop("timeout", 120.0),
    )
    return LocalEngine().run(request, **kwargs)


def high_pass_variance(image: np.ndarray) -> float:
    return float((image - cv2.GaussianBlur(image, (0, 0), 3)).var())


@pytest.mark.parametrize(("colour", "thickness"), [((250, 250, 250), 2), ((15, 15, 15), 3), ((240, 240, 240), 1)])
def test_it_inpaints_a_thin_scratch_toward_its_neighbours(colour: tuple[int, int, int], thickness: int) -> None:
    clean = smooth_photo()
    scratched = clean.copy()
    cv2.line(scratched, (40, 60), (600, 420), colour, thickness)
    cv2.line(scratched, (500, 30), (420, 460), colour, thickness)
    on_line = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.line(on_line, (40, 60), (600, 420), 255, thickness)
    cv2.line(on_line, (500, 30), (420, 460), 255, thickness)
    line = on_line > 0

    result = run("restore", png(scratched), {"megapixels": WIDTH * HEIGHT / 1e6})

    restored = decode_bgr(result.outputs[0].data, (WIDTH, HEIGHT))
    before = np.abs(scratched[line].astype(np.float64) - clean[line]).mean()
    after = np.abs(restored[line] - clean[line]).mean()
    assert before > 60
    # The scratch pixels now look like the picture around them (contrast changes included).
    assert after < before * 0.15, (before, after)


def test_it_removes_dust_specks() -> None:
    clean = smooth_photo()
    dusty = clean.copy()
    rng = np.random.default_rng(7)
    xs, ys = rng.integers(20, WIDTH - 20, 40), rng.integers(20, HEIGHT - 20, 40)
    centres = [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]
    for index, centre in enumerate(centres):
        cv2.circle(dusty, centre, 1 + index % 2, (255, 255, 255) if index % 3 else (0, 0, 0), -1)
    specks = np.any(dusty != clean, axis=2)

    result = run("restore", png(dusty), {"megapixels": WIDTH * HEIGHT / 1e6})

    restored = decode_bgr(result.outputs[0].data, (WIDTH, HEIGHT))
    before = np.abs(dusty[specks].astype(np.float64) - clean[specks]).mean()
    after = np.abs(restored[specks] - clean[specks]).mean()
    assert after < before * 0.15, (before, after)


def test_it_lowers_the_noise_and_keeps_the_picture() -> None:
    clean = textured_photo()
    rng = np.random.default_rng(3)
    noisy = np.clip(clean + rng.normal(0, 18, clean.shape), 0, 255).astype(np.uint8)

    result = run("restore", png(noisy), {"megapixels": WIDTH * HEIGHT / 1e6})

    restored = decode_bgr(result.outputs[0].data, (WIDTH, HEIGHT))
    noise_before = (noisy.astype(np.float64) - clean).var()
    noise_after = (restored - cv2.GaussianBlur(restored, (0, 0), 1.5)).var()
    assert high_pass_variance(restored) < high_pass_variance(noisy.astype(np.float64)) / 2
    assert noise_after < noise_before / 4, (noise_before, noise_after)
    # Still the same picture: strongly correlated with the clean original.
    correlation = np.corrcoef(restored[:, :, 1].ravel(), clean[:, :, 1].astype(np.float64).ravel())[0, 1]
    assert correlation > 0.95


def test_it_gives_a_labelled_jpeg_and_reports_each_step() -> None:
    progress: list[int] = []
    submitted: list[tuple[str, str]] = []

    result = run(
        "restore",
        png(smooth_photo()),
        run_id="a1b2.try-1",
        on_progress=progress.append,
        on_submitted=lambda node, run_id: submitted.append((node, run_id)),
    )

    output = result.first("image")
    assert output.data[:3] == b"\xff\xd8\xff"
    assert output.content_type == "image/jpeg"
    assert output.filename == "a1b2.try-1.jpg"
    with Image.open(io.BytesIO(output.data)) as jpeg:
        assert jpeg.format == "JPEG"
        software = jpeg.getexif()[0x0131]
    assert LocalEngine.label in software
    assert "development" in software  # its results must never pass for a GPU restoration
    assert "AI" not in software
    assert (result.engine, result.node, result.prompt_id) == ("local", "local", "a1b2.try-1")
    assert result.execution_seconds is not None
    assert submitted == [("local", "a1b2.try-1")]
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert progress[-1] == 100
    assert len(progress) >= 5


@pytest.mark.parametrize("megapixels", [0.25, 1.2])
def test_it_scales_the_result_to_the_requested_megapixels(megapixels: float) -> None:
    result = run("restore", png(smooth_photo()), {"megapixels": megapixels})

    with Image.open(io.BytesIO(result.outputs[0].data)) as jpeg:
        width, height = jpeg.size
    assert width * height == pytest.approx(megapixels * 1e6, rel=0.02)
    assert width / height == pytest.approx(WIDTH / HEIGHT, rel=0.01)


def test_it_leaves_a_black_and_white_photo_black_and_white() -> None:
    photo = smooth_photo(gray=True)
    cv2.line(photo, (0, 0), (600, 400), (240, 240, 240), 2)

    result = run("restore_cpu", png(photo), {"megapixels": 0.3})

    restored = decode_bgr(result.outputs[0].data)
    assert np.abs(restored[:, :, 0] - restored[:, :, 2]).max() <= 3


@pytest.mark.parametrize(
    ("workflow", "params", "size", "fps"),
    [
        ("animate_preview", {}, (480, 480), 16),
        ("animate_hd_cpu", {"seconds": 1.5, "fps": 12, "width": 320, "height": 256}, (320, 256), 12),
    ],
)
def test_it_animates_the_photo_as_a_moving_h264_mp4(
    workflow: str, params: dict[str, Any], size: tuple[int, int], fps: int
) -> None:
    progress: list[int] = []

    result = run(workflow, png(textured_photo()), params, on_progress=progress.append)

    output = result.first("video")
    assert (output.content_type, output.filename) == ("video/mp4", "attempt-1.try-1.mp4")
    with av.open(io.BytesIO(output.data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == fps
        frames = [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(stream)]
    seconds = params.get("seconds", 2.0)
    assert len(frames) == wan_frames(seconds, fps)
    assert frames[0].shape == (size[1], size[0], 3)
    differences = [np.abs(a - b).mean() for a, b in itertools.pairwise(frames)]
    assert min(differences) > 0.05, "a frame repeats the one before: the camera stopped"
    assert np.abs(frames[0] - frames[-1]).mean() > 10
    # Progress moves with the frames, not only at the start and end.
    assert len([p for p in progress if 5 < p < 100]) >= 8
    assert progress[-1] == 100


@pytest.mark.parametrize("data", [b"", b"not an image at all", png(smooth_photo())[:200]])
def test_it_refuses_bytes_that_are_not_an_image(data: bytes) -> None:
    with pytest.raises(PermanentEngineError) as caught:
        run("restore", data)
    assert caught.value.code == "invalid_input"
    assert not isinstance(caught.value, TransientEngineError)


def test_it_refuses_an_image_too_large_to_decode_before_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rekindle.engines.local.restore.MAX_INPUT_PIXELS", WIDTH * HEIGHT - 1)

    with pytest.raises(PermanentEngineError) as caught:
        run("restore", png(smooth_photo()))
    assert caught.value.code == "invalid_input"
    assert "too large" in caught.value.message


def test_it_refuses_unknown_workflows_and_bad_parameters() -> None:
    with pytest.raises(PermanentEngineError) as caught:
        run("restore", png(smooth_photo()), {"megapixels": 99})
    assert caught.value.code == "invalid_parameters"
    assert "megapixels" in caught.value.details["fields"]
    with pytest.raises(PermanentEngineError) as caught:
        run("sharpen_everything", png(smooth_photo()))
    assert caught.value.code == "unknown_workflow"


def test_it_stops_when_should_cancel_says_so() -> None:
    progress: list[int] = []

    with pytest.raises(EngineCanceled):
        run(
            "animate_preview",
            png(smooth_photo()),
            on_progress=progress.append,
            should_cancel=lambda: len(progress) >= 3,
        )
    assert progress[-1] < 100


def test_it_gives_up_with_a_transient_error_when_the_time_is_up() -> None:
    with pytest.raises(TransientEngineError) as caught:
        run("restore", png(smooth_photo()), timeout=1e-9)
    assert caught.value.code == "timeout"


def test_it_is_the_engine_get_engine_builds_and_reports_its_health() -> None:
    engine = get_engine("local")
    assert isinstance(engine, LocalEngine)
    [health] = engine.health()
    assert health.healthy
    assert health.node == "local"
    assert LocalEngine.label in health.detail
    assert health.preflight["restore"] == []
    assert health.preflight["animate_hd"] == []
