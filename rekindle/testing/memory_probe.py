"""Run in its own process by a test: one large local-engine restore in a worker thread, then the resident memory.

``python -m rekindle.testing.memory_probe MEGAPIXELS trim|keep`` prints the resident set
in MB before and after, once the thread has ended (after ``give_back_freed_memory()``
with ``trim``), as ``before after``.
"""

from __future__ import annotations

import io
import os
import sys
import threading


def resident_mb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)


def main(megapixels: float, trim: bool) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    import numpy as np
    from PIL import Image

    from rekindle.bounded import give_back_freed_memory
    from rekindle.engines.base import InputImage, RunRequest
    from rekindle.engines.local import LocalEngine

    width = int((megapixels * 1_000_000 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    pixels = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    del pixels
    before = resident_mb()

    def run() -> None:
        LocalEngine().run(
            RunRequest(
                workflow="restore",
                run_id="memory-probe",
                images=(InputImage("image", "photo.jpg", data),),
                params={"megapixels": 4.0, "denoise": 1.0},
                timeout=600,
            )
        )
        if trim:
            give_back_freed_memory()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(before, resident_mb())


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2] == "trim")
