#!/bin/sh
# The image's entrypoint: empty PROMETHEUS_MULTIPROC_DIR (files of the last run's processes would be added to
# this run's metrics, under process ids that may be reused), then run the command (gunicorn, rundramatiq, ...).
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi
exec "$@"
