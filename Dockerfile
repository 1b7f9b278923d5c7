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
# ASGI: a job page's live progress stream is a coroutine, not a worker held per viewer.
# SIGTERM: gunicorn stops accepting and gives requests in flight --graceful-timeout (30 s) to finish; give the
# container at least that before SIGKILL (docker stop -t 35, Kubernetes terminationGracePeriodSeconds >= 35).
# The worker image runs: python manage.py rundramatiq --worker-shutdown-timeout 60000 (above
# WORKER_SHUTDOWN_GRACE_SECONDS + WORKER_SHUTDOWN_FORCE_SECONDS, 25 + 15 s by default); stop timeout >= 65 s.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "rekindle.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60", "--graceful-timeout", "30", "--access-logfile", "-"]
