"""Keeps secrets and personal data out of logs (and out of Sentry): one set of rules, applied everywhere.

What never reaches a log line in clear:

- a job's ``access`` value (email links) and its ``token`` in a query string, and the headers that
  carry them (``X-Job-Token``, ``X-Job-Access``);
- an email address: masked to its first letter and domain (``f***@example.com``), so support can
  still tell two addresses apart without reading them;
- an ``Authorization: Bearer`` value (Auth0 access tokens) and any bare JWT;
- the signature and credentials of a presigned S3 URL (``X-Amz-Signature``, ``Signature``,
  ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``AWSAccessKeyId``), and the signature botocore
  prints when it signs (``Signature:\\n<hex>`` at DEBUG);
- image bytes: a ``bytes`` value, a printed ``b'...'`` of some length, or a long base64 run.

The access logs of uvicorn (and gunicorn, Django's dev server) write each request's path with its
query; botocore at DEBUG prints request bodies and signatures. Two ways in, one set of rules
(:func:`redact`):

- :func:`scrub_event`, a structlog processor that runs last before rendering, on every record the
  logging setup formats (``rekindle.logs``): structlog's own events and the standard library's
  records alike (Django, Dramatiq, uvicorn, gunicorn, botocore);
- :class:`RedactSecrets`, a ``logging.Filter`` on the access loggers themselves (``install``, from
  ``RekindleConfig``), for a handler that is not ours (gunicorn's own, started with a log config
  of its own).

:func:`scrub_value` is the same walk over any JSON-like value: Sentry's ``before_send`` uses it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

# The query parameters that stand for a job's access (jobs.access: ``token``, ``access``).
SECRET_PARAMS = ("access", "token")
_SECRET = re.compile(r"(?P<name>(?:[?&;]|\b)(?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"';]+")
# A presigned URL's signature and credentials (SigV4 and SigV2), in a query string or a header.
_SIGNED = re.compile(
    r"(?P<name>\b(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|AWSAccessKeyId|Signature|Credential)"
    r"\s*[=:]\s*)[^&\s\"',;>]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# The local part without the characters that end a query value (``&``, ``=``, ``?``, ``/``), so
# ``?who=family@example.com`` keeps its name; and the ``%40`` form of an address in a query string.
_EMAIL = re.compile(
    r"(?P<first>[A-Za-z0-9])[A-Za-z0-9.!#$%*+^_`{|}~-]{0,63}?(?:@|%40)(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)
# A printed bytes value (``b'\xff\xd8...'``) longer than a short marker.
_BYTES_REPR = re.compile(r"""\bb(?P<q>['"])(?:\\.|(?!(?P=q)).){48,}?(?P=q)""", re.DOTALL)
# A run of base64 (either alphabet) long enough to be file contents rather than an id.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{100,}={0,2}")
# Header names whose values are secrets whatever they look like (Sentry sends request headers).
SECRET_KEYS = frozenset(
    {
        "authorization",
        "cookie",
        "set-cookie",
        "x-job-token",
        "x-job-access",
        "http_x_job_token",
        "http_x_job_access",
        "http_authorization",
        "http_cookie",
        "token",
        "access",
        "password",
        "secret_key",
        "stripe-signature",
    }
)

REDACTED = "[redacted]"
# Strings longer than this are cut before they are scanned (a dumped response body, a huge repr);
# a traceback fits.
MAX_STRING = 16_000


def mask_email(address: str) -> str:
    """``family@example.com`` -> ``f***@example.com``: the first letter and the domain, nothing else."""
    match = _EMAIL.fullmatch(address.strip())
    if match is None:
        return REDACTED
    return f"{match.group('first')}***@{match.group('domain')}"


def email_digest(address: str) -> str:
    """A short stable digest of an address (for telling addresses apart in logs without showing them)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:12]


def _looks_like_file_contents(run: str) -> bool:
    # Base64 of binary is about 40% capitals and 40% small letters, with digits; UUIDs and hex digests
    # are one case, and a path of them with a timestamp (``.../20261202T043533Z-2e05``) a few capitals.
    upper = sum(c.isupper() for c in run)
    lower = sum(c.islower() for c in run)
    return upper >= len(run) // 8 and lower >= len(run) // 8 and any(c.isdigit() for c in run)


def _base64_run(match: re.Match[str]) -> str:
    run = match.group(0)
    return f"[base64 {len(run)} chars]" if _looks_like_file_contents(run) else run


# Every rule needs one of these (or a long string): a line without any is returned as it is, unscanned.
_MAYBE_SECRET = re.compile(r"""[@=:'"]|%40|bearer|eyJ""", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every secret and address above replaced (idempotent: redacting twice changes nothing).

    Each rule runs only on text that has the character it starts from, so the ids and words of most
    fields cost one scan, and no rule backtracks over a long run it cannot match.
    """
    if len(text) < 100 and not _MAYBE_SECRET.search(text):
        return text
    if len(text) > MAX_STRING:
        text = text[:MAX_STRING] + f"...[{len(text) - MAX_STRING} more chars]"
    if "b'" in text or 'b"' in text:
        text = _BYTES_REPR.sub(lambda m: f"[bytes {len(m.group(0))} chars]", text)
    if "=" in text:
        text = _SECRET.sub(lambda m: m.group("name") + REDACTED, text)
    if "=" in text or ":" in text:
        text = _SIGNED.sub(lambda m: m.group("name") + REDACTED, text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(lambda m: m.group("name") + REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: f"{m.group('first')}***@{m.group('domain')}", text)
    if len(text) >= 100:
        text = _BASE64_RUN.sub(_base64_run, text)
    return text


def scrub_value(value: Any, *, key: str | None = None, depth: int = 0) -> Any:
    """Any JSON-like value with :func:`redact` applied to every string in it, and secrets by key removed.

    ``bytes`` become their length; objects that are not JSON are shown by ``str`` and redacted,
    so a rendered ``repr`` cannot carry what the rules catch.
    """
    if key is not None and key.lower() in SECRET_KEYS and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes]"
    if depth > 12:
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return {k: scrub_value(v, key=str(k), depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [scrub_value(v, depth=depth + 1) for v in value]
        return items if not isinstance(value, tuple) else tuple(items)
    return redact(str(value))


def scrub_event(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor: every value of the event, the message and a rendered traceback included."""
    return {key: scrub_value(value, key=key) for key, value in event_dict.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"[{len(value)} bytes]"
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


ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "django.server")


def install() -> None:
    """Put the filter on the access loggers (their records may never reach our handler)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())
