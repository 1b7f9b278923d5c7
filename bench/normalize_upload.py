"""How long normalizing an upload takes, and how much memory it needs, by image size.

Run by hand: ``DEBUG=true .venv/bin/python bench/normalize_upload.py [megapixels ...]``.
Each photo is a noisy JPEG (noise defeats compression, so it is the slow case); past
about 25 MP such a file is over the default upload limit, so raise ``UPLOAD_MAX_BYTES``.

``--rgba16`` measures instead a 16-bit RGBA PNG of that size (the heaviest kind of photo accepted).

Decoding runs in a bounded child process (``rekindle.bounded``), so the report gives the
child's peak resident memory and how much the calling process grew (nothing, now).
Figures are in bench/README.md.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")

import django

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from PIL import Image  # noqa: E402

from rekindle.bounded import last_peak_resident_bytes  # noqa: E402
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


def rgba16_png(megapixels: float) -> bytes:
    width = int((megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    # Smooth gradients: a realistic scan compresses, so the file fits the upload limit.
    ramp = np.linspace(0, 65535, width, dtype=np.uint16)
    pixels = np.empty((height, width, 4), dtype=">u2")
    pixels[..., 0] = ramp
    pixels[..., 1] = ramp[::-1]
    pixels[..., 2] = 30000
    pixels[..., 3] = 50000
    # Every row like the one above it: PNG's "Up" filter makes all but the first a run of zeros.
    first = b"\0" + pixels[0].tobytes()
    rows = first + (b"\2" + bytes(len(first) - 1)) * (height - 1)
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def main(sizes: list[float], *, rgba16: bool) -> None:
    settings.UPLOAD_MAX_BYTES = 200 * 1024 * 1024
    settings.UPLOAD_DECODE_MEMORY_MB = 4096
    for megapixels in sizes:
        data = rgba16_png(megapixels) if rgba16 else noisy_jpeg(megapixels)
        before = resident_mb()
        started = time.perf_counter()
        result = normalize_image(io.BytesIO(data))
        elapsed = time.perf_counter() - started
        child_peak = (last_peak_resident_bytes() or 0) / 1024 / 1024
        result.close()
        print(
            f"{megapixels:5.1f} MP {'RGBA16 PNG' if rgba16 else 'noisy JPEG'}  upload {len(data) / 1e6:6.1f} MB  "
            f"stored {result.size / 1e6:6.1f} MB  {elapsed:6.2f} s  decoding child peak RSS {child_peak:6.0f} MB  "
            f"this process {resident_mb() - before:+.0f} MB"
        )


if __name__ == "__main__":
    arguments = [arg for arg in sys.argv[1:] if arg != "--rgba16"]
    main([float(arg) for arg in arguments] or [2.0, 12.0, 24.0], rgba16="--rgba16" in sys.argv)
