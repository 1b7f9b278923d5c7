"""How long normalizing an upload takes, and how much memory it needs, by image size.

Run by hand: ``DEBUG=true .venv/bin/python bench/normalize_upload.py [megapixels ...]``.
Each photo is a noisy JPEG (noise defeats compression, so it is the slow case); past
about 25 MP such a file is over the default upload limit, so raise ``UPLOAD_MAX_BYTES``.

Measured on the 2-core development machine: 2 MP 0.06 s, 12 MP 0.40 s, 24 MP 0.66 s,
48 MP 1.6 s with about 180 MB more peak memory.
"""

from __future__ import annotations

import io
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")

import django

django.setup()

from PIL import Image  # noqa: E402

from rekindle.images import normalize_image  # noqa: E402


def noisy_jpeg(megapixels: float) -> bytes:
    width = int((megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    tile = Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3))
    image = Image.new("RGB", (width, height))
    for x in range(0, width, 256):
        for y in range(0, height, 256):
            image.paste(tile, (x, y))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main(sizes: list[float]) -> None:
    for megapixels in sizes:
        data = noisy_jpeg(megapixels)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        result = normalize_image(io.BytesIO(data))
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result.close()
        print(
            f"{megapixels:5.1f} MP  upload {len(data) / 1e6:6.1f} MB  stored {result.size / 1e6:6.1f} MB  "
            f"{elapsed:6.2f} s  peak RSS {peak / 1024:7.0f} MB (+{(peak - before) / 1024:.0f})"
        )


if __name__ == "__main__":
    main([float(arg) for arg in sys.argv[1:]] or [2.0, 12.0, 24.0])
