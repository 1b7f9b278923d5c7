#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# The ceiling, in ms, of a worker's idle Redis poll. Dramatiq's consumer sleeps between
# fetches with a backoff that grows to this value, so a message sent to an idle worker
# waits about 40% of it before it starts; Dramatiq's own default (1000) adds ~400 ms to
# every restore. Dramatiq reads it (as ``dramatiq_worker_timeout``) from the environment
# when it is imported, and ``rundramatiq`` execs the ``dramatiq`` command with this
# process's environment, so setting it here covers every worker started through
# manage.py (make worker, docker-compose, the tests). DRAMATIQ_WORKER_TIMEOUT, spelled
# like our other settings, or Dramatiq's own lowercase name, set in the environment win.
DRAMATIQ_WORKER_TIMEOUT_MS = "100"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rekindle.settings")
    os.environ.setdefault(
        "dramatiq_worker_timeout", os.environ.get("DRAMATIQ_WORKER_TIMEOUT") or DRAMATIQ_WORKER_TIMEOUT_MS
    )
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
