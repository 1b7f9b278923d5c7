"""Rekindle's settings: one module, every value read from the environment.

With no environment at all this runs on the embedded defaults: SQLite, files in
``var/media``, Dramatiq actors in-process, the local CPU engine, console email.
Set the variables listed in ``.env.example`` to run on PostgreSQL, Redis, S3 and
ComfyUI. A malformed value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, cast

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from rekindle.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
)
from rekindle.logs import LOG_FORMATS, logging_config
from rekindle.logs import default_format as default_log_format
from rekindle.sentry import init_sentry

# Lets runtime code write the generic forms the type checker wants (ModelAdmin[Job]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("REKINDLE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-never-used-with-debug-off"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# The public address of the service, used for links in emails.
SITE_URL = env_url("SITE_URL", "http://127.0.0.1:8000", schemes=("http", "https")).rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI's own files for /api/docs/, served with the other static files (no CDN).
    "drf_spectacular_sidecar",
    "django_dramatiq",
    "corsheaders",
    "social_django",
    "djstripe",
    "rekindle",
    "jobs",
    "restoration",
    "animation",
    "billing",
]

MIDDLEWARE = [
    # django-prometheus' pair: this one first and its partner last, so the HTTP metrics time everything between.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Next, so every answer (a redirect, a static file, an error) names its request and every line logs it.
    "rekindle.request_id.request_id_middleware",
    # /healthz, /readyz and /metrics, answered before anything reads the Host header, a session or a cookie.
    "rekindle.ops.OpsEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the pages' and the admin's) straight from the app, before anything else runs.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A view that loses the database answers 503 database_unavailable with Retry-After (rekindle/db_outage.py).
    "rekindle.db_outage.DatabaseOutageMiddleware",
    "rekindle.private_answers.private_api_answers",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "social_django.middleware.SocialAuthExceptionMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Long-lived threads per web process (ASGI) that run requests' synchronous parts, one request each at a time; each
# keeps its database connection (DB_CONN_MAX_AGE) and S3 client between requests. Past them a request gets a
# thread of its own for its life (rekindle/asgi.py).
WEB_REQUEST_THREADS = env_int("WEB_REQUEST_THREADS", 8, minimum=1)

ROOT_URLCONF = "rekindle.urls"
WSGI_APPLICATION = "rekindle.wsgi.application"
ASGI_APPLICATION = "rekindle.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "rekindle.auth.context_processors.auth0_login",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
)
try:
    # Kept connections are checked before a request (or a worker's message) reuses them, so the first
    # request after a database restart reconnects instead of failing on the connection the restart ended.
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A development database: no persistent connections, and wait for the
    # in-process worker's writes instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # A deferred transaction that reads and then writes cannot wait for the lock: SQLite fails it at
    # once ("database is locked"), whatever the timeout. Taking the write lock at BEGIN makes it wait.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Files ------------------------------------------------------------------
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME", "us-east-1")
AWS_S3_ENDPOINT_URL = env_url("AWS_S3_ENDPOINT_URL", schemes=("http", "https")) or None
AWS_ACCESS_KEY_ID = env_str("AWS_ACCESS_KEY_ID") or None
AWS_SECRET_ACCESS_KEY = env_str("AWS_SECRET_ACCESS_KEY") or None
AWS_S3_ADDRESSING_STYLE = env_choice("AWS_S3_ADDRESSING_STYLE", "auto", ("auto", "path", "virtual"))
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_DEFAULT_ACL = None
# rekindle.storage.put writes at exact keys: S3Storage replaces the object (as FileSystemStorage does below).
AWS_S3_FILE_OVERWRITE = True
AWS_QUERYSTRING_AUTH = True
# Presigned URLs in API responses live this long (seconds).
AWS_QUERYSTRING_EXPIRE = env_int("PRESIGNED_URL_TTL", 900, minimum=1)
# A URL presigned less than this long ago is handed out again (same address: the browser keeps the file, and no
# CPU goes to signing again); at most half the TTL, so every URL handed out has at least half its life left. 0: sign
# every time.
PRESIGNED_URL_REUSE_SECONDS = env_int("PRESIGNED_URL_REUSE_SECONDS", min(60, AWS_QUERYSTRING_EXPIRE // 2), minimum=0)
if PRESIGNED_URL_REUSE_SECONDS > AWS_QUERYSTRING_EXPIRE // 2:
    raise ImproperlyConfigured("PRESIGNED_URL_REUSE_SECONDS must be at most half of PRESIGNED_URL_TTL")

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# In development the files are served from the source folders; in production from STATIC_ROOT (collectstatic).
WHITENOISE_USE_FINDERS = DEBUG

if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"addressing_style": None if AWS_S3_ADDRESSING_STYLE == "auto" else AWS_S3_ADDRESSING_STYLE},
    }
else:
    # Job files are written at exact keys: replace what is there instead of picking a new name.
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"allow_overwrite": True}}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Uploads ----------------------------------------------------------------
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 25 * 1024 * 1024, minimum=1)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 50_000_000, minimum=1)
# The shortest side an upload may have, and how many times its long side may be its short one:
# smaller or thinner images cannot be restored, so they are refused at upload (400).
UPLOAD_MIN_SIDE = env_int("UPLOAD_MIN_SIDE", 32, minimum=1)
UPLOAD_MAX_ASPECT = env_float("UPLOAD_MAX_ASPECT", 8.0, minimum=1.0)
# Decoding and normalizing an upload runs in a child process with these bounds; a file that needs
# more (a crafted decompression bomb) is a 400 image_too_complex, never a killed web process.
UPLOAD_DECODE_SECONDS = env_float("UPLOAD_DECODE_SECONDS", 60.0, minimum=1.0)
UPLOAD_DECODE_MEMORY_MB = env_int("UPLOAD_DECODE_MEMORY_MB", 1024, minimum=64)
# Request bodies are always streamed to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # non-file fields only
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None

# --- Jobs API ---------------------------------------------------------------
# Jobs per page of GET /api/v1/jobs (a client may ask for up to 100 with ?page_size=).
JOBS_PAGE_SIZE = env_int("JOBS_PAGE_SIZE", 20, minimum=1)

# --- Background work (Dramatiq) ---------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
# Without Redis, actors run in this process: `manage.py serve` starts a worker
# thread on the stub broker.
DRAMATIQ_IN_PROCESS = not REDIS_URL
# Keeps one deployment's (or one test run's) queues apart on a shared Redis.
DRAMATIQ_REDIS_NAMESPACE = env_str("DRAMATIQ_REDIS_NAMESPACE", "dramatiq")
DRAMATIQ_BROKER = {
    # Dramatiq's Redis broker, plus a wake-up notice so an idle worker starts a new message at once.
    "BROKER": "rekindle.broker.WakingRedisBroker" if REDIS_URL else "dramatiq.brokers.stub.StubBroker",
    "OPTIONS": {"url": REDIS_URL, "namespace": DRAMATIQ_REDIS_NAMESPACE} if REDIS_URL else {},
    "MIDDLEWARE": [
        # The sending request's id rides in each message and is bound in the worker (rekindle/log_context.py).
        "rekindle.log_context.RequestIdMessages",
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        # Dramatiq's Retries, except that a lost database connection is waited out, never counted.
        "rekindle.broker.OutageAwareRetries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        # A worker that boots takes back the running attempts of this host's dead workers (jobs/processes.py).
        "jobs.worker_boot.TakeBackOrphanedAttempts",
        # SIGTERM: running attempts finish within WORKER_SHUTDOWN_GRACE_SECONDS, then go back to the queue at once.
        "rekindle.worker_shutdown.GracefulShutdown",
    ],
}
# After SIGTERM, how long running attempts may go on before they are stopped on their node and requeued; and how
# much longer a run that does not stop gets before Shutdown is raised in its thread. rundramatiq's
# --worker-shutdown-timeout (milliseconds) must be longer than the two together.
WORKER_SHUTDOWN_GRACE_SECONDS = env_int("WORKER_SHUTDOWN_GRACE_SECONDS", 25, minimum=0)
WORKER_SHUTDOWN_FORCE_SECONDS = env_int("WORKER_SHUTDOWN_FORCE_SECONDS", 15, minimum=1)
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# --- Operations: metrics and probes (rekindle/ops.py, README "Operations") ----------
# /metrics answers a client whose address (read as the throttles read it, behind NUM_PROXIES) is in one of
# these networks, or one that sends "Authorization: Bearer <METRICS_TOKEN>"; anyone else gets 403 or 401.
METRICS_TOKEN = env_str("METRICS_TOKEN")
try:
    METRICS_ALLOWED_IPS = [
        ipaddress.ip_network(cidr, strict=False)
        for cidr in env_list("METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS must be addresses or networks (CIDR): {exc}") from exc
# prometheus_client's multiprocess mode: every process (gunicorn's workers, each rundramatiq process) writes
# its values to files here and /metrics adds them up. It must be set in the environment before the process
# starts (prometheus_client reads it when imported) and emptied when the deployment starts (the image's
# entrypoint does); one folder per machine or container, as files are named by process id.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# Dramatiq's own Prometheus middleware in the workers (with Redis and PROMETHEUS_MULTIPROC_DIR): its exposition
# server, a process the worker forks, serves every worker process's metrics on this address. Loopback unless
# set: Dramatiq's own default would be every interface.
DRAMATIQ_METRICS_HOST = env_str("DRAMATIQ_METRICS_HOST", "127.0.0.1").strip()
try:
    ipaddress.ip_address(DRAMATIQ_METRICS_HOST)
except ValueError as exc:
    raise ImproperlyConfigured(f"DRAMATIQ_METRICS_HOST must be an IP address, got {DRAMATIQ_METRICS_HOST!r}") from exc
DRAMATIQ_METRICS_PORT = env_int("DRAMATIQ_METRICS_PORT", 9191, minimum=0)
DRAMATIQ_METRICS_ENABLED = bool(REDIS_URL and PROMETHEUS_MULTIPROC_DIR and DRAMATIQ_METRICS_PORT)
if DRAMATIQ_METRICS_ENABLED:
    # dramatiq.middleware.prometheus reads these when it is imported (by the broker's setup, after these
    # settings), so ours always win over anything in the environment; `rundramatiq` execs the worker with
    # this process's environment. Its files go where every other process's do, so one scrape sees them all.
    # Dramatiq's names are lowercase.
    os.environ["dramatiq_prom_host"] = DRAMATIQ_METRICS_HOST  # noqa: SIM112
    os.environ["dramatiq_prom_port"] = str(DRAMATIQ_METRICS_PORT)  # noqa: SIM112
    os.environ["dramatiq_prom_db"] = PROMETHEUS_MULTIPROC_DIR  # noqa: SIM112
    cast(list[str], DRAMATIQ_BROKER["MIDDLEWARE"]).append("dramatiq.middleware.prometheus.Prometheus")
# /readyz: each check's own bound (seconds); past it the check is unavailable.
READINESS_TIMEOUT_SECONDS = env_float("READINESS_TIMEOUT_SECONDS", 3.0, minimum=0.1)
# Retry-After of a 503 from /readyz.
READINESS_RETRY_AFTER_SECONDS = env_int("READINESS_RETRY_AFTER_SECONDS", 10, minimum=1)
# Queues by priority: paid HD runs, then interactive restores and previews, then bulk work (attempts staff or
# the stuck-attempt cron requeued). Run worker processes per queue (README: "Sizing workers per queue").
# Within one worker, a lower Dramatiq priority number runs first.
DRAMATIQ_QUEUE_PAID = env_str("DRAMATIQ_QUEUE_PAID", "paid")
DRAMATIQ_QUEUE_INTERACTIVE = env_str("DRAMATIQ_QUEUE_INTERACTIVE", "interactive")
DRAMATIQ_QUEUE_BULK = env_str("DRAMATIQ_QUEUE_BULK", "bulk")
DRAMATIQ_PRIORITY = {"paid": 0, "interactive": 10, "bulk": 100}

# --- Processing engines -----------------------------------------------------
REKINDLE_ENGINE = env_choice("REKINDLE_ENGINE", "local", ("local", "comfyui", "runpod"))

# --- Workflows ----------------------------------------------------------------
# ComfyUI workflow files with their parameter maps (workflows/README.md).
REKINDLE_WORKFLOWS_DIR = Path(env_str("REKINDLE_WORKFLOWS_DIR", str(BASE_DIR / "workflows")))
# Which workflow each kind of work runs. The *_cpu twins run on a ComfyUI without a GPU;
# the local engine reads only the parameter map, so the production names suit it too.
REKINDLE_WORKFLOW_RESTORE = env_str("REKINDLE_WORKFLOW_RESTORE", "restore")
REKINDLE_WORKFLOW_ANIMATE_PREVIEW = env_str("REKINDLE_WORKFLOW_ANIMATE_PREVIEW", "animate_preview")
REKINDLE_WORKFLOW_ANIMATE_HD = env_str("REKINDLE_WORKFLOW_ANIMATE_HD", "animate_hd")

# --- ComfyUI ------------------------------------------------------------------
# The node pool used when REKINDLE_ENGINE=comfyui (rekindle/engines/comfyui/).
COMFYUI_URLS = [url.rstrip("/") for url in env_list("COMFYUI_URLS")]
for _comfyui_url in COMFYUI_URLS:
    if _comfyui_url.split("://", 1)[0].lower() not in ("http", "https"):
        raise ImproperlyConfigured(f"COMFYUI_URLS must hold http:// or https:// URLs, got {_comfyui_url!r}")
if REKINDLE_ENGINE == "comfyui" and not COMFYUI_URLS:
    raise ImproperlyConfigured("REKINDLE_ENGINE=comfyui needs COMFYUI_URLS")
# Seconds a run may take, per workflow kind; 0 uses the workflow file's timeout_seconds.
# A RunRequest's own timeout, when shorter, wins.
COMFYUI_TIMEOUTS = {
    "restore": env_float("COMFYUI_TIMEOUT_RESTORE", 0.0, minimum=0.0),
    "animate_preview": env_float("COMFYUI_TIMEOUT_ANIMATE_PREVIEW", 0.0, minimum=0.0),
    "animate_hd": env_float("COMFYUI_TIMEOUT_ANIMATE_HD", 0.0, minimum=0.0),
}
# Our prompts a node runs at a time (ComfyUI runs one at a time; more only queue there).
COMFYUI_PROMPTS_PER_NODE = env_int("COMFYUI_PROMPTS_PER_NODE", 1, minimum=1)
# Seconds without a websocket message before the run polls /history and /queue instead.
COMFYUI_SOCKET_QUIET_SECONDS = env_float("COMFYUI_SOCKET_QUIET_SECONDS", 30.0, minimum=0.1)
COMFYUI_POLL_SECONDS = env_float("COMFYUI_POLL_SECONDS", 1.0, minimum=0.05)
# A node that stops answering is skipped and probed again after this, doubling up to the max.
COMFYUI_NODE_BACKOFF_SECONDS = env_float("COMFYUI_NODE_BACKOFF_SECONDS", 5.0, minimum=0.1)
COMFYUI_NODE_BACKOFF_MAX_SECONDS = env_float("COMFYUI_NODE_BACKOFF_MAX_SECONDS", 300.0, minimum=0.1)
# Per HTTP request to a node (uploads, /prompt, /view of a large video).
COMFYUI_HTTP_TIMEOUT = env_float("COMFYUI_HTTP_TIMEOUT", 60.0, minimum=1.0)
# How long a run waits for a free node before giving up for now (a transient error).
COMFYUI_SLOT_WAIT_SECONDS = env_float("COMFYUI_SLOT_WAIT_SECONDS", 60.0, minimum=0.0)
# How long a run waits for a busy node that has its models loaded before making another switch models.
COMFYUI_AFFINITY_WAIT_SECONDS = env_float("COMFYUI_AFFINITY_WAIT_SECONDS", 10.0, minimum=0.0)
# Times a run lost on a node (it died or restarted) is sent again, on another node if there is one.
COMFYUI_MAX_RESUBMITS = env_int("COMFYUI_MAX_RESUBMITS", 2, minimum=0)
# Polls in a row a node may answer with a server error while it runs our prompt before the run leaves it.
COMFYUI_POLL_FAILURES = env_int("COMFYUI_POLL_FAILURES", 3, minimum=1)
# How long a prompt we stop (to move its run, or on cancel or timeout) may take to leave the node's queue; past
# it the run fails (stop_unconfirmed) rather than risk running on two nodes.
COMFYUI_STOP_CONFIRM_SECONDS = env_float("COMFYUI_STOP_CONFIRM_SECONDS", 30.0, minimum=1.0)
# Names this worker to the nodes (client_id prefix); default: rekindle-<host>-<pid>.
COMFYUI_CLIENT_NAME = env_str("COMFYUI_CLIENT_NAME")
# Timeout of probes and of the /queue and /history reads while a prompt runs: a hung node is noticed this fast.
COMFYUI_PROBE_TIMEOUT_SECONDS = env_float("COMFYUI_PROBE_TIMEOUT_SECONDS", 3.0, minimum=0.1)
# Socket silence after which a run checks (one short /queue) that its node still answers.
COMFYUI_LIVENESS_SECONDS = env_float("COMFYUI_LIVENESS_SECONDS", 5.0, minimum=0.1)
# A node's live /queue length, read by any worker, is reused this long before the next choice reads it again.
COMFYUI_QUEUE_FRESH_SECONDS = env_float("COMFYUI_QUEUE_FRESH_SECONDS", 1.0, minimum=0.0)
# Remove our inputs and fetched outputs from the node after each run (needs the rekindle_files extension on the
# node, comfyui_extension/; without it nothing is removed and the nodes page says so).
COMFYUI_CLEAN_NODE_FILES = env_bool("COMFYUI_CLEAN_NODE_FILES", True)

# --- The GPU fleet (rekindle/engines/comfyui/fleet.py) -------------------------
# Where node slots, loaded workflows, up/down and /object_info live: "redis" shares them between every worker
# process (the default when REDIS_URL is set), "local" keeps them in each process (the embedded default).
FLEET_STATE = env_choice("FLEET_STATE", "redis" if REDIS_URL else "local", ("redis", "local"))
if FLEET_STATE == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("FLEET_STATE=redis needs REDIS_URL")
# Keeps one deployment's (or one test run's) fleet state apart on a shared Redis.
FLEET_NAMESPACE = env_str("FLEET_NAMESPACE", "rekindle")
# A node slot held by a worker that died is free again after this many seconds (renewed every third of it).
FLEET_SLOT_LEASE_SECONDS = env_float("FLEET_SLOT_LEASE_SECONDS", 30.0, minimum=1.0)
# While no node is up (a restart, a deploy of the GPU image, a network cut) runs wait this long for one, their
# tries unspent, shown as waiting for a node; then they fail with nodes_unavailable.
FLEET_OUTAGE_WAIT_SECONDS = env_float("FLEET_OUTAGE_WAIT_SECONDS", 300.0, minimum=0.0)
# Node slots of the whole fleet only paid HD runs may take (never more than a quarter of the slots up).
FLEET_RESERVED_PAID_SLOTS = env_int("FLEET_RESERVED_PAID_SLOTS", 1, minimum=0)

# --- Overflow to RunPod ---------------------------------------------------------
# With RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY set, a ComfyUI run that would wait longer than this for a node slot
# (estimated from the shared queue and measured service times, or actually waited) goes to RunPod instead.
# 0: never overflow.
OVERFLOW_AFTER_SECONDS = env_float("OVERFLOW_AFTER_SECONDS", 0.0, minimum=0.0)
# RunPod runs at once, fleet-wide.
OVERFLOW_MAX_CONCURRENT = env_int("OVERFLOW_MAX_CONCURRENT", 4, minimum=0)
# GPU seconds a day (UTC) overflow may spend; past it runs wait for the own pool.
OVERFLOW_DAILY_GPU_SECONDS = env_float("OVERFLOW_DAILY_GPU_SECONDS", 3600.0, minimum=0.0)
# What one RunPod GPU second costs (for the nodes page and the metrics; e.g. 0.00076 for an A100 80 GB flex).
OVERFLOW_COST_PER_GPU_SECOND = env_float("OVERFLOW_COST_PER_GPU_SECOND", 0.00076, minimum=0.0)

# --- RunPod -------------------------------------------------------------------
# A serverless endpoint running the standard ComfyUI worker (runpod-workers/worker-comfyui).
RUNPOD_BASE_URL = env_url("RUNPOD_BASE_URL", "https://api.runpod.ai", schemes=("http", "https")).rstrip("/")
RUNPOD_ENDPOINT_ID = env_str("RUNPOD_ENDPOINT_ID")
RUNPOD_API_KEY = env_str("RUNPOD_API_KEY")
# Status polling starts at the first interval and backs off to the second (seconds).
RUNPOD_POLL_INTERVAL = env_float("RUNPOD_POLL_INTERVAL", 1.0, minimum=0.01)
RUNPOD_POLL_MAX_INTERVAL = env_float("RUNPOD_POLL_MAX_INTERVAL", 10.0, minimum=0.01)
# Per HTTP request to RunPod's API (seconds); the run as a whole has the workflow's timeout.
RUNPOD_REQUEST_TIMEOUT = env_float("RUNPOD_REQUEST_TIMEOUT", 30.0, minimum=0.1)
if REKINDLE_ENGINE == "runpod" and not (RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY):
    raise ImproperlyConfigured("REKINDLE_ENGINE=runpod needs RUNPOD_ENDPOINT_ID and RUNPOD_API_KEY")

# --- Pipelines (restore, animate and HD runs on Dramatiq) --------------------
# Restores, animations and HD runs a job may have queued or running at once; asking for more is a 409.
MAX_ATTEMPTS_IN_FLIGHT = env_int("MAX_ATTEMPTS_IN_FLIGHT", 3, minimum=1)
# Backpressure (jobs/backpressure.py): new restores and animations get 503 queue_full with Retry-After when their
# priority queue holds QUEUE_MAX_DEPTH attempts, or the new one would start more than QUEUE_MAX_WAIT_SECONDS from now
# (0 turns either check off); paid HD runs are never refused. Estimates use the attempts finished in the last
# QUEUE_THROUGHPUT_WINDOW_SECONDS, or QUEUE_DEFAULT_RUN_SECONDS per run on one slot without history, and are kept
# QUEUE_ESTIMATE_CACHE_SECONDS per process.
QUEUE_MAX_DEPTH = env_int("QUEUE_MAX_DEPTH", 500, minimum=0)
QUEUE_MAX_WAIT_SECONDS = env_int("QUEUE_MAX_WAIT_SECONDS", 3600, minimum=0)
QUEUE_THROUGHPUT_WINDOW_SECONDS = env_int("QUEUE_THROUGHPUT_WINDOW_SECONDS", 900, minimum=60)
QUEUE_DEFAULT_RUN_SECONDS = env_int("QUEUE_DEFAULT_RUN_SECONDS", 60, minimum=1)
QUEUE_ESTIMATE_CACHE_SECONDS = env_int("QUEUE_ESTIMATE_CACHE_SECONDS", 2, minimum=0)
# A running attempt holds a lease its worker renews while the engine works (every third of it);
# `requeue_stuck_attempts` puts back an attempt whose lease ran out (its worker died).
LEASE_SECONDS = env_int("LEASE_SECONDS", 60, minimum=3)
# Claims an attempt gets before a transient error (node down, timeout, storage 5xx) fails it for good.
MAX_TRIES = env_int("MAX_TRIES", 3, minimum=1)
# Wait between tries after a transient error, in milliseconds, doubling from the first to the second.
RETRY_MIN_BACKOFF_MS = env_int("RETRY_MIN_BACKOFF_MS", 5_000, minimum=1)
RETRY_MAX_BACKOFF_MS = env_int("RETRY_MAX_BACKOFF_MS", 60_000, minimum=1)
# A queued attempt whose message went out longer ago than this (or never: the broker was down)
# is sent again by `requeue_stuck_attempts`. Keep it above RETRY_MAX_BACKOFF_MS.
QUEUED_RESEND_SECONDS = env_int("QUEUED_RESEND_SECONDS", 300, minimum=1)
# A queued attempt whose retry after a transient error was due this long ago and has not started is sent
# again by `requeue_stuck_attempts` (a worker that loses its Redis connection forgets its delayed messages).
RETRY_OVERDUE_SECONDS = env_int("RETRY_OVERDUE_SECONDS", 15, minimum=1)
# A worker whose database connection is lost keeps trying the write that ends a run (its result, its
# failure, its return to the queue) this long (seconds), reconnecting each time, before it gives up.
DB_WRITE_RETRY_SECONDS = env_float("DB_WRITE_RETRY_SECONDS", 10.0, minimum=0.0)
# A worker whose write of a run's output meets S3 failing for now (5xx, throttling, no connection) keeps
# trying it this long (seconds) before the run goes back to the queue without it.
STORAGE_WRITE_RETRY_SECONDS = env_float("STORAGE_WRITE_RETRY_SECONDS", 30.0, minimum=0.0)
# Hard time limit of each actor (seconds); the engine's own timeout is the workflow's, capped below this.
RESTORE_TIME_LIMIT_SECONDS = env_int("RESTORE_TIME_LIMIT_SECONDS", 20 * 60, minimum=10)
ANIMATION_TIME_LIMIT_SECONDS = env_int("ANIMATION_TIME_LIMIT_SECONDS", 30 * 60, minimum=10)
HD_TIME_LIMIT_SECONDS = env_int("HD_TIME_LIMIT_SECONDS", 70 * 60, minimum=10)
# Emails link to the job with a signed job id that the API accepts as the job's token for this many days.
JOB_LINK_MAX_AGE_DAYS = env_int("JOB_LINK_MAX_AGE_DAYS", 30, minimum=1)
# Where those emails link: {job_id} and {access} are filled in. By default the job page this server
# serves (/j/<id>); point it at an external frontend's job page, which passes ``access`` on to the API.
JOB_LINK_URL = env_str("JOB_LINK_URL", SITE_URL + "/j/{job_id}?access={access}")
# Someone whose link expired may have a fresh one emailed to the job's address at most this often.
JOB_LINK_RESEND_MINUTES = env_int("JOB_LINK_RESEND_MINUTES", 10, minimum=1)

# --- Live progress (GET /api/v1/jobs/{id}/events, jobs/live.py) ----------------
# Without Redis each web process reads an open job's state this often (seconds); with Redis the
# changes are published and the state is read this often too only in case one was lost.
LIVE_POLL_SECONDS = env_float("LIVE_POLL_SECONDS", 0.5, minimum=0.05)
LIVE_RESYNC_SECONDS = env_float("LIVE_RESYNC_SECONDS", 10.0, minimum=0.1)
# A comment goes down an idle stream this often, so proxies keep it open; a stream lasts at most this long.
LIVE_KEEPALIVE_SECONDS = env_float("LIVE_KEEPALIVE_SECONDS", 15.0, minimum=0.1)
LIVE_STREAM_MAX_SECONDS = env_float("LIVE_STREAM_MAX_SECONDS", 900.0, minimum=1.0)

# --- Pages ------------------------------------------------------------------------
# Origins besides this one and the S3 endpoint that the pages' images and videos may come from (a CDN).
CSP_MEDIA_ORIGINS = env_list("CSP_MEDIA_ORIGINS")

# --- Payments (Stripe through dj-stripe; billing/) ----------------------------
# Two variables turn payments on: the secret API key and the webhook endpoint's signing secret
# (``whsec_...``), which ``manage.py migrate`` (and ``sync_stripe_webhook_endpoint``) writes into
# dj-stripe's WebhookEndpoint row. Without the key, checkout answers 503 ``billing_disabled``.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
if STRIPE_SECRET_KEY and not STRIPE_SECRET_KEY.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
    raise ImproperlyConfigured("STRIPE_SECRET_KEY must be a secret or restricted key (sk_... or rk_...)")
if STRIPE_WEBHOOK_SECRET and not STRIPE_WEBHOOK_SECRET.startswith("whsec_"):
    raise ImproperlyConfigured("STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret (whsec_...)")
# dj-stripe picks the live or test keys from this; the key itself says which it is.
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith(("sk_live_", "rk_live_"))
# Where Stripe's API is: only for testing against a stand-in (rekindle/testing/stripe_stub.py).
STRIPE_API_BASE = env_url("STRIPE_API_BASE", "https://api.stripe.com", schemes=("https", "http")).rstrip("/")
# What the HD video costs: a Price made in Stripe's dashboard, or an amount in the currency's
# smallest unit (cents) with the currency, sent as inline price data.
STRIPE_HD_PRICE_ID = env_str("STRIPE_HD_PRICE_ID")
STRIPE_HD_AMOUNT = env_int("STRIPE_HD_AMOUNT", 900, minimum=1)
STRIPE_HD_CURRENCY = env_str("STRIPE_HD_CURRENCY", "usd").strip().lower()
if len(STRIPE_HD_CURRENCY) != 3 or not STRIPE_HD_CURRENCY.isalpha():
    raise ImproperlyConfigured(f"STRIPE_HD_CURRENCY must be a three-letter currency code, got {STRIPE_HD_CURRENCY!r}")
# A Checkout Session stays payable this long (Stripe allows 30 to 1440 minutes).
STRIPE_CHECKOUT_MINUTES = env_int("STRIPE_CHECKOUT_MINUTES", 60, minimum=30)
if STRIPE_CHECKOUT_MINUTES > 1440:
    raise ImproperlyConfigured("STRIPE_CHECKOUT_MINUTES must be at most 1440 (24 hours)")
# Per request to Stripe's API: seconds to wait, and retries of a failed connection or a 5xx.
STRIPE_TIMEOUT_SECONDS = env_float("STRIPE_TIMEOUT_SECONDS", 10.0, minimum=0.1)
STRIPE_MAX_NETWORK_RETRIES = env_int("STRIPE_MAX_NETWORK_RETRIES", 2, minimum=0)
# A webhook whose signature is older than this (seconds) is refused (a replayed request).
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1)
# reconcile_payments looks at the Checkout Sessions created in this many past hours (Stripe retries
# a webhook for up to three days).
RECONCILE_PAYMENTS_HOURS = env_int("RECONCILE_PAYMENTS_HOURS", 72, minimum=1)
# dj-stripe: foreign keys to its objects by Stripe id (a new installation), webhooks checked by signature.
# Its receivers that sync objects from Stripe's API run in a worker (billing.webhooks), not in the webhook.
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
# dj-stripe's schema in one migration instead of its three, which take minutes (see that file).
MIGRATION_MODULES = {"djstripe": "billing.migrations.djstripe"}
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"

# --- Email ------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# The folder Django's file-based email backend writes to (development and end-to-end tests).
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or None
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Rekindle <noreply@rekindle.local>")
# Seconds each SMTP connect and command may take (Django's own setting; without it a hung server blocks forever).
# Ready emails go out from their own actor (jobs.tasks.send_ready_email), retried with backoff up to
# EMAIL_MAX_RETRIES times, so a mail server that hangs costs a worker thread this long per try and nothing else.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 8, minimum=0)

# --- API --------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rekindle.api_errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API takes JSON bodies; the upload view alone takes multipart. Form bodies cannot carry
    # the nested `parameters` object, and DRF would quietly read them as "no parameters".
    "DEFAULT_PARSER_CLASSES": ["rekindle.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Rekindle API",
    "DESCRIPTION": "Photo restoration, colorization and animation.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Restore, animation and HD runs share one status set: one schema enum, not one per field.
    "ENUM_NAME_OVERRIDES": {
        "AttemptStatusEnum": "jobs.models.AttemptStatus",
        "AttemptErrorCodeEnum": "jobs.customer_errors.PUBLIC_CODES",
    },
    # /api/docs/ loads Swagger UI from this server's static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "rekindle.openapi.add_common_error_responses",
    ],
}

# --- Accounts and security ----------------------------------------------------
# API: Auth0 access tokens (RS256 JWTs, `Authorization: Bearer`), checked locally
# against the tenant's JWKS (rekindle/auth/). Browser login: social-auth's Auth0
# backend next to Django's own login. Without AUTH0_* the API takes no bearer
# tokens and the admin offers only its password login.
AUTH0_DOMAIN = env_str("AUTH0_DOMAIN").strip().removeprefix("https://").rstrip("/")
# The API identifier configured in Auth0; access tokens must name it in `aud`.
AUTH0_AUDIENCE = env_str("AUTH0_AUDIENCE").strip()
AUTH0_ISSUER = env_url("AUTH0_ISSUER", f"https://{AUTH0_DOMAIN}/" if AUTH0_DOMAIN else "", schemes=("https", "http"))
AUTH0_JWKS_URL = env_url(
    "AUTH0_JWKS_URL",
    f"https://{AUTH0_DOMAIN}/.well-known/jwks.json" if AUTH0_DOMAIN else "",
    schemes=("https", "http"),
)
# Clock skew tolerated on exp and nbf (seconds).
AUTH0_LEEWAY_SECONDS = env_int("AUTH0_LEEWAY_SECONDS", 30, minimum=0)
# An unknown `kid` refetches the key set at most this often (seconds); keys are refreshed after the max age.
AUTH0_JWKS_REFETCH_SECONDS = env_float("AUTH0_JWKS_REFETCH_SECONDS", 60.0, minimum=1.0)
AUTH0_JWKS_MAX_AGE_SECONDS = env_float("AUTH0_JWKS_MAX_AGE_SECONDS", 3600.0, minimum=1.0)
AUTH0_JWKS_TIMEOUT_SECONDS = env_float("AUTH0_JWKS_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# The access-token claim holding the person's email (an Auth0 Action adds it, often namespaced).
AUTH0_EMAIL_CLAIM = env_str("AUTH0_EMAIL_CLAIM", "email")
AUTH0_CLIENT_ID = env_str("AUTH0_CLIENT_ID")
AUTH0_CLIENT_SECRET = env_str("AUTH0_CLIENT_SECRET")
AUTH0_API_ENABLED = bool(AUTH0_AUDIENCE)
if AUTH0_API_ENABLED and not (AUTH0_ISSUER and AUTH0_JWKS_URL):
    raise ImproperlyConfigured("AUTH0_AUDIENCE needs AUTH0_DOMAIN (or both AUTH0_ISSUER and AUTH0_JWKS_URL)")
if AUTH0_API_ENABLED and not DEBUG and not AUTH0_JWKS_URL.startswith("https://"):
    raise ImproperlyConfigured("AUTH0_JWKS_URL must be https:// when DEBUG is off")
AUTH0_LOGIN_ENABLED = bool(AUTH0_DOMAIN and AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET)

AUTHENTICATION_BACKENDS = [
    *(["social_core.backends.auth0.Auth0OAuth2"] if AUTH0_LOGIN_ENABLED else []),
    "django.contrib.auth.backends.ModelBackend",
]
SOCIAL_AUTH_AUTH0_DOMAIN = AUTH0_DOMAIN
SOCIAL_AUTH_AUTH0_KEY = AUTH0_CLIENT_ID
SOCIAL_AUTH_AUTH0_SECRET = AUTH0_CLIENT_SECRET
SOCIAL_AUTH_AUTH0_SCOPE = ["openid", "profile", "email"]
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_REDIRECT_URL = "/admin/"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/admin/login/"
SOCIAL_AUTH_REDIRECT_IS_HTTPS = not DEBUG
LOGIN_URL = "/admin/login/"

REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "rekindle.auth.authentication.Auth0JWTAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]

# How many reverse proxies (load balancers) sit in front of the app. Behind one,
# the client's address is the last X-Forwarded-For entry and the scheme comes from
# X-Forwarded-Proto; with none, both headers are ignored (a client could forge them).
NUM_PROXIES = env_int("NUM_PROXIES", 0 if DEBUG else 1, minimum=0)
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if NUM_PROXIES else None

# The frontend's origins may call the API from the browser (bearer tokens, no cookies).
CORS_ALLOWED_ORIGINS = env_list(
    "CORS_ALLOWED_ORIGINS", ["http://localhost:3000", "http://127.0.0.1:3000"] if DEBUG else []
)
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "user-agent",
    "x-requested-with",
    "x-job-token",
    "x-job-access",
)
CORS_EXPOSE_HEADERS = ["Retry-After"]

# HTTPS only in production: redirect, HSTS, cookies never sent over plain HTTP.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# A load balancer's health checks come over plain HTTP and take no redirect: these paths answer on HTTP too
# (patterns on the path without its leading slash, as SecurityMiddleware matches them).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"


_RATE_PERIODS = ("s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day")


def _env_rate(name: str, default: str) -> str | None:
    """A throttle rate like ``20/hour`` (per second, minute, hour or day); ``off`` means no limit."""
    value = env_str(name, default).strip().lower()
    if value in ("off", "none"):
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in _RATE_PERIODS:
        raise ImproperlyConfigured(f"{name} must look like 20/hour (second, minute, hour, day) or off, got {value!r}")
    return value


# Per signed-in user (THROTTLE_<SCOPE>_RATE) and per client address (THROTTLE_<SCOPE>_IP_RATE,
# counting every request from the address, signed in or not); rekindle/throttling.py.
THROTTLE_RATES = {
    "upload_user": _env_rate("THROTTLE_UPLOAD_RATE", "20/hour"),
    "upload_ip": _env_rate("THROTTLE_UPLOAD_IP_RATE", "30/hour"),
    "restore_user": _env_rate("THROTTLE_RESTORE_RATE", "60/hour"),
    "restore_ip": _env_rate("THROTTLE_RESTORE_IP_RATE", "120/hour"),
    "animate_user": _env_rate("THROTTLE_ANIMATE_RATE", "20/hour"),
    "animate_ip": _env_rate("THROTTLE_ANIMATE_IP_RATE", "40/hour"),
    "link_user": _env_rate("THROTTLE_LINK_RATE", "10/hour"),
    "link_ip": _env_rate("THROTTLE_LINK_IP_RATE", "20/hour"),
}
THROTTLE_CACHE = "throttle"
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "rekindle.throttling.ScopedIPRateThrottle",
    "rekindle.throttling.ScopedUserRateThrottle",
]

# Shared between processes through Redis when there is one; otherwise per process.
if REDIS_URL:
    CACHES = {
        alias: {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": prefix}
        for alias, prefix in (("default", "rekindle"), ("throttle", "rekindle-throttle"))
    }
else:
    CACHES = {
        alias: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias}
        for alias in ("default", "throttle")
    }

# --- Retention (staff console and cron) ---------------------------------------
# purge_expired_jobs deletes jobs older than this, with their files, unless one has a paid HD result.
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 30, minimum=1)
# prune_orphan_files only deletes stored objects no row points at once they are this old, so
# a file a worker is writing right now (its row not yet saved) is never taken for an orphan.
ORPHAN_GRACE_HOURS = env_int("ORPHAN_GRACE_HOURS", 24, minimum=1)
# Days of attempts the admin dashboard charts.
DASHBOARD_DAYS = env_int("DASHBOARD_DAYS", 14, minimum=1)

# --- Internationalization ---------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Logs and errors ----------------------------------------------------------
# One JSON line per event (json), or aligned readable lines (console, the default with DEBUG on, as
# `make run`); Django's, Dramatiq's and the servers' records alike, with the request and attempt
# fields bound, secrets and addresses scrubbed (rekindle/logs.py, rekindle/log_redaction.py).
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")).upper()
LOG_FORMAT = env_choice("LOG_FORMAT", default_log_format(DEBUG), LOG_FORMATS)
LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)

# Sentry (optional): errors of the web process and the workers, scrubbed like the logs (rekindle/sentry.py).
# Started here, before django_dramatiq builds the broker, so the Dramatiq integration's middleware is on it.
SENTRY_DSN = env_url("SENTRY_DSN", schemes=("http", "https"))
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "development" if DEBUG else "production")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0)
if SENTRY_TRACES_SAMPLE_RATE > 1.0:
    raise ImproperlyConfigured("SENTRY_TRACES_SAMPLE_RATE must be between 0 and 1")
init_sentry(dsn=SENTRY_DSN, environment=SENTRY_ENVIRONMENT, traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)
