"""restore_photo: one small photo end to end through the local CPU engine, from the command line."""

from __future__ import annotations

import io
from io import StringIO
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image, ImageDraw

from rekindle.management.commands.restore_photo import parse_params


@pytest.fixture(autouse=True)
def _local_engine(settings: Any) -> None:
    settings.REKINDLE_ENGINE = "local"


@pytest.fixture
def scratched_photo(tmp_path: Path) -> Path:
    """A smooth 160x120 photo with one thin bright scratch across it."""
    gradient = np.linspace(70, 170, 160, dtype=np.uint8)
    pixels = np.stack([np.tile(gradient, (120, 1))] * 3, axis=-1)
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).line((5, 20, 150, 100), fill=(255, 255, 255), width=1)
    path = tmp_path / "grandpa.jpg"
    image.save(path, "JPEG", quality=95)
    return path


def _scratch_brightness(image: Image.Image) -> float:
    gray = np.asarray(image.convert("L"), dtype=float)
    # Pixels on the drawn line (x from 5 to 150, y = 20 + (x - 5) * 80 / 145).
    xs = np.arange(10, 146)
    ys = np.round(20 + (xs - 5) * 80 / 145).astype(int)
    return float(gray[ys, xs].mean())


def test_it_restores_a_photo_and_writes_the_jpeg(
    scratched_photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "out" / "restored.jpg"
    out = StringIO()

    call_command("restore_photo", str(scratched_photo), "--out", str(out_path), stdout=out)

    restored = Image.open(out_path)
    assert restored.format == "JPEG"
    assert restored.size[0] >= 160
    original = Image.open(scratched_photo)
    # The scratch was inpainted: its pixels came down toward their neighbours.
    assert _scratch_brightness(restored.resize(original.size)) < _scratch_brightness(original) - 20
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "grandpa.jpg: JPEG 160x120; engine local"
    assert lines[1].startswith(f"Restored grandpa.jpg -> {out_path} (")
    assert "on local node local" in lines[1]
    assert "100%" in capsys.readouterr().err


def test_it_animates_the_restored_photo_into_an_mp4(scratched_photo: Path, tmp_path: Path) -> None:
    out = StringIO()
    call_command("restore_photo", str(scratched_photo), "--animate", "--no-progress", stdout=out)

    restored_path = tmp_path / "grandpa_restored.jpg"
    movie_path = tmp_path / "grandpa_animated.mp4"
    assert restored_path.is_file()
    with av.open(str(movie_path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) > 5
    assert not np.array_equal(frames[0], frames[-1])  # it moves
    assert f"Animated -> {movie_path}" in out.getvalue()


def test_it_refuses_what_is_not_a_photo(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(CommandError, match=r"notes\.jpg"):
        call_command("restore_photo", str(text), stdout=StringIO())
    with pytest.raises(CommandError, match="No such file"):
        call_command("restore_photo", str(tmp_path / "missing.jpg"), stdout=StringIO())


def test_it_checks_parameters_against_the_workflow(scratched_photo: Path) -> None:
    with pytest.raises(CommandError, match="Must be at least 0"):
        call_command("restore_photo", str(scratched_photo), "--param", "seed=-5", "--no-progress", stdout=StringIO())
    with pytest.raises(CommandError, match="NAME=VALUE"):
        call_command("restore_photo", str(scratched_photo), "--param", "seed", stdout=StringIO())


def test_it_reads_parameter_values_as_json_or_text() -> None:
    assert parse_params(["seed=7", "denoise=0.5", "prompt=a warm day", "flag=true"]) == {
        "seed": 7,
        "denoise": 0.5,
        "prompt": "a warm day",
        "flag": True,
    }


def test_it_accepts_a_png_with_an_alpha_channel(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    buffer = io.BytesIO()
    Image.new("RGBA", (96, 64), (120, 100, 80, 200)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    call_command("restore_photo", str(path), "--no-progress", stdout=StringIO())
    assert Image.open(tmp_path / "scan_restored.jpg").mode == "RGB"
