"""Rekindle's settings: one module, every value read from the environment.

With no environment at all this runs on the embedded defaults: SQLite, files in
``var/media``, Dramatiq actors in-process, the local CPU engine, console email.
Set the variables listed in ``.env.example`` to run on PostgreSQL, Redis, S3 and
ComfyUI. A malformed value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path

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
    "django_dramatiq",
    "rekindle",
    "jobs",
    "restoration",
    "animation",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A development database: no persistent connections, and wait for the
    # in-process worker's writes instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
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
AWS_S3_FILE_OVERWRITE = True
AWS_QUERYSTRING_AUTH = True
# Presigned URLs in API responses live this long (seconds).
AWS_QUERYSTRING_EXPIRE = env_int("PRESIGNED_URL_TTL", 900, minimum=1)

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"addressing_style": None if AWS_S3_ADDRESSING_STYLE == "auto" else AWS_S3_ADDRESSING_STYLE},
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- Uploads ----------------------------------------------------------------
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 25 * 1024 * 1024, minimum=1)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 50_000_000, minimum=1)
# Request bodies are always streamed to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.TemporaryFileUploadHandler"]
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # non-file fields only
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None

# --- Background work (Dramatiq) ---------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
# Without Redis, actors run in this process: `manage.py serve` starts a worker
# thread on the stub broker.
DRAMATIQ_IN_PROCESS = not REDIS_URL
# Keeps one deployment's (or one test run's) queues apart on a shared Redis.
DRAMATIQ_REDIS_NAMESPACE = env_str("DRAMATIQ_REDIS_NAMESPACE", "dramatiq")
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker" if REDIS_URL else "dramatiq.brokers.stub.StubBroker",
    "OPTIONS": {"url": REDIS_URL, "namespace": DRAMATIQ_REDIS_NAMESPACE} if REDIS_URL else {},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# --- Processing engines -----------------------------------------------------
REKINDLE_ENGINE = env_choice("REKINDLE_ENGINE", "local", ("local", "comfyui", "runpod"))

# --- Pipelines (restore, animate and HD runs on Dramatiq) --------------------
# Restores, animations and HD runs a job may have queued or running at once; asking for more is a 409.
MAX_ATTEMPTS_IN_FLIGHT = env_int("MAX_ATTEMPTS_IN_FLIGHT", 3, minimum=1)
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
# Hard time limit of each actor (seconds); the engine's own timeout is the workflow's, capped below this.
RESTORE_TIME_LIMIT_SECONDS = env_int("RESTORE_TIME_LIMIT_SECONDS", 20 * 60, minimum=10)
ANIMATION_TIME_LIMIT_SECONDS = env_int("ANIMATION_TIME_LIMIT_SECONDS", 30 * 60, minimum=10)
HD_TIME_LIMIT_SECONDS = env_int("HD_TIME_LIMIT_SECONDS", 70 * 60, minimum=10)
# Emails link to the job with a signed job id that the API accepts as the job's token for this many days.
JOB_LINK_MAX_AGE_DAYS = env_int("JOB_LINK_MAX_AGE_DAYS", 30, minimum=1)

# --- Workflows ----------------------------------------------------------------
# ComfyUI workflow files with their parameter maps (workflows/README.md).
REKINDLE_WORKFLOWS_DIR = Path(env_str("REKINDLE_WORKFLOWS_DIR", str(BASE_DIR / "workflows")))
# Which workflow each kind of work runs. The *_cpu twins run on a ComfyUI without a GPU;
# the local engine reads only the parameter map, so the production names suit it too.
REKINDLE_WORKFLOW_RESTORE = env_str("REKINDLE_WORKFLOW_RESTORE", "restore")
REKINDLE_WORKFLOW_ANIMATE_PREVIEW = env_str("REKINDLE_WORKFLOW_ANIMATE_PREVIEW", "animate_preview")
REKINDLE_WORKFLOW_ANIMATE_HD = env_str("REKINDLE_WORKFLOW_ANIMATE_HD", "animate_hd")

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

# --- Email ------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Rekindle <noreply@rekindle.local>")

# --- API --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rekindle.api_errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}
