"""Logging for every process: one JSON line per event (or readable lines in development), secrets scrubbed.

structlog, over the standard library: our own code may log with ``structlog.get_logger()`` (events
named for what happened, ids as fields) or with ``logging.getLogger(__name__)`` as before, and the
records of Django, Dramatiq, botocore, uvicorn and gunicorn go through the same processors, because
one :class:`structlog.stdlib.ProcessorFormatter` formats every record the root handler (and the
servers' own loggers) emit. So every line, ours or a library's:

- carries the fields bound for the work in hand (``structlog.contextvars``): the request id in the
  web process (``rekindle.request_id``), the request id and message id in a worker
  (``rekindle.log_context``), and the attempt's job id, attempt id, kind, tries, engine, node and
  prompt id once the worker has claimed it (``jobs.runner``);
- is scrubbed last (:func:`rekindle.log_redaction.scrub_event`): no email address, token, access
  value, bearer, presigned signature or image bytes in clear, tracebacks included;
- is rendered as JSON (``LOG_FORMAT=json``, the default with ``DEBUG`` off) or as aligned text
  (``console``, the default with ``DEBUG`` on, so ``make run`` reads well).

:func:`logging_config` is the ``LOGGING`` dict; it reads no Django setting, so ``gunicorn.conf.py``
gives the same to gunicorn's master process before Django is loaded.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict

from rekindle.log_redaction import scrub_event

LOG_FORMATS = ("json", "console")

# Loggers that servers configure with handlers of their own: ours replace them, so their lines are
# rendered (and scrubbed) like every other.
SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn.error",
    "gunicorn.access",
    "django.server",
)
# Extras some libraries put on their records that only repeat the message (or hold the request object).
_NOISE = ("color_message", "request", "server_time")


def _drop_noise(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    for key in _NOISE:
        event_dict.pop(key, None)
    return event_dict


# The keys a reader looks for first, at the head of each line; the rest follow as they were bound.
_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def _first_keys_first(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    head = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    return {**head, **event_dict}


def _shared_processors() -> list[Any]:
    """What every record gets before it is rendered, whether structlog's own or the standard library's."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_structlog() -> None:
    """structlog's own loggers hand their events to the standard library, where the formatter renders them."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter(fmt: str = "json") -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every handler (``LOGGING["formatters"]``); configures structlog on the way.

    Python's warnings go through logging too (``py.warnings``), so they are lines like any other.
    """
    configure_structlog()
    logging.captureWarnings(True)
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer(default=str)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_noise],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks as text before the scrub, so what an exception says is scrubbed too.
            structlog.processors.format_exc_info,
            scrub_event,
            _first_keys_first,
            renderer,
        ],
    )


def logging_config(*, fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every process (web, worker, cron, gunicorn's master)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    level = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "structured"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "rekindle.logs.formatter", "fmt": fmt}},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's default config gives "django" a plain handler of its own (with DEBUG on): ours only.
            "django": {"handlers": [], "level": level, "propagate": True},
            **{name: {"handlers": ["console"], "level": level, "propagate": False} for name in SERVER_LOGGERS},
        },
    }


def default_format(debug: bool) -> str:
    return "console" if debug else "json"


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named like the module, for events with fields (``logger.info("attempt.claimed")``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


__all__ = ["configure_structlog", "default_format", "formatter", "get_logger", "logging_config"]
