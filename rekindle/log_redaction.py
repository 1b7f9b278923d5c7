"""Keeps job secrets out of logs: the ``access`` value of email links and job tokens in query strings.

An email link is ``/j/<id>?access=...``, and an API caller may send ``?token=``; the access logs
of uvicorn (and gunicorn, Django's dev server) write each request's path with its query. This
filter rewrites those values as ``[redacted]`` in every record it sees, whatever the logger's
format. It is attached to the console handler (``LOGGING``) and, since gunicorn gives the access
logger handlers of its own, to the access loggers themselves (``install``, from ``RekindleConfig``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

# The query parameters that stand for a job's access (jobs.access: ``token``, ``access``).
SECRET_PARAMS = ("access", "token")
_SECRET = re.compile(r"(?P<name>(?:[?&;]|\b)(?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"';]+")
ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "django.server")

REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _SECRET.sub(lambda match: match.group("name") + REDACTED, text)


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_value(value) for key, value in record.args.items()}
        return True


def install() -> None:
    """Put the filter on the access loggers (their records may never reach our console handler)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())
