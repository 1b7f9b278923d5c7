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
# Empties PROMETHEUS_MULTIPROC_DIR, then runs the command.
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
# The process answers (no dependency asked: /readyz is for those); the worker's compose service sets its own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# ASGI through gunicorn.conf.py (uvicorn workers; a job page's live progress stream is a coroutine, not a worker
# held per viewer; metrics of exited workers handed back to prometheus_client).
CMD ["gunicorn", "rekindle.asgi:application", "--config", "gunicorn.conf.py"]
