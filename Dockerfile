# The web and worker image: one image, two commands (gunicorn with uvicorn workers for the pages and the API,
# rundramatiq for the workers).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system rekindle && useradd --system --gid rekindle --home /app rekindle
WORKDIR /app

# The runtime's own requirements only (no test or lint tools), every package checked against its hash.
COPY requirements.txt ./
RUN pip install --require-hashes --no-deps -r requirements.txt

COPY --chown=rekindle:rekindle . .
RUN DEBUG=true python manage.py collectstatic --noinput \
    && mkdir -p /app/var && chown rekindle:rekindle /app/var

USER rekindle
EXPOSE 8000
# Empties PROMETHEUS_MULTIPROC_DIR, then execs the command (so the command itself gets the SIGTERM).
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
# The process answers (no dependency asked: /readyz is for those); the worker's compose service sets its own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# ASGI through gunicorn.conf.py (uvicorn workers; a job page's live progress stream is a coroutine, not a worker
# held per viewer; metrics of exited workers handed back to prometheus_client).
# SIGTERM: gunicorn stops accepting and gives requests in flight graceful_timeout (30 s) to finish; give the
# container at least that before SIGKILL (docker stop -t 35, Kubernetes terminationGracePeriodSeconds >= 35).
# The worker image runs: python manage.py rundramatiq --worker-shutdown-timeout 60000 (above
# WORKER_SHUTDOWN_GRACE_SECONDS + WORKER_SHUTDOWN_FORCE_SECONDS, 25 + 15 s by default); stop timeout >= 65 s.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "rekindle.asgi:application", "--config", "gunicorn.conf.py"]
