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
CMD ["gunicorn", "rekindle.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "60", "--access-logfile", "-"]
