"""What the operator's endpoints cost, measured by hand: /healthz, /readyz and /metrics, in process.

    .venv/bin/python bench/ops_endpoints.py [--requests 300]

Embedded defaults in a temporary folder (SQLite, migrated first; local files; the local engine),
through Django's test client, so the figures are the application's own time without a network:
/healthz (no dependency), /readyz (its checks at once in threads: SELECT 1, a file in the media
folder, the engine), /metrics (the process's registry, django-prometheus' and ours, then the
attempts in flight counted in the database). Reported: the median and p95 of each, in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="rekindle-bench-ops-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "rekindle.settings",
            "DEBUG": "true",
            "REKINDLE_VAR_DIR": str(folder),
            "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
            "LOG_LEVEL": "ERROR",
        }
    )
    for name in ("REDIS_URL", "AWS_STORAGE_BUCKET_NAME", "PROMETHEUS_MULTIPROC_DIR", "COMFYUI_URLS"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    client = Client()
    print(f"{'endpoint':10} {'median ms':>10} {'p95 ms':>8}  ({args.requests} requests each)")
    for path in ("/healthz", "/readyz", "/metrics"):
        client.get(path)  # warm
        times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.content[:300])
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"{path:10} {statistics.median(times):10.2f} {p95:8.2f}")


if __name__ == "__main__":
    main()
