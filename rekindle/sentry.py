"""Errors to Sentry, when ``SENTRY_DSN`` is set: the web process's and the workers', scrubbed like the logs.

Started from the settings module, before django_dramatiq builds the broker: sentry-sdk's Dramatiq
integration adds its middleware by wrapping ``Broker.__init__``, so it must be in place first.
The Django integration reports a view's unhandled exception, the Dramatiq integration an
actor's, and the logging integration every ``ERROR`` line (``jobs.runner``'s internal errors).

What an event may carry is cut down three ways, because a family's photos, addresses and links
must not end up in a third party's store:

- ``send_default_pii=False``: no cookies, user, IP address;
- no local variables in stack frames (``include_local_variables=False``): they hold the
  email being sent, a job's token, the bytes of an image;
- :func:`before_send` and :func:`before_breadcrumb` run :func:`rekindle.log_redaction.scrub_value`
  over the whole event: the rules of the logs (no email in clear, no token or access value, no
  bearer, no presigned signature, no image bytes), and header values that are secrets by name
  (``X-Job-Token``, ``X-Job-Access``, ``Authorization``) whatever they look like.

Each event is tagged with the log fields bound when it happened (request id, attempt id, job id,
kind, node), so an event and its log lines are found from each other.
"""

from __future__ import annotations

from typing import Any

from rekindle.log_redaction import scrub_value

# The bound log fields copied onto an event as tags.
TAG_FIELDS = ("request_id", "message_id", "job_id", "attempt_id", "kind", "tries", "engine", "node", "prompt_id")


def _scrub(value: Any, key: str | None = None) -> Any:
    """:func:`scrub_value`, keeping sentry-sdk's own markers (``AnnotatedValue``) for its serializer."""
    from sentry_sdk._types import AnnotatedValue

    if isinstance(value, AnnotatedValue):
        return AnnotatedValue(_scrub(value.value, key), value.metadata)
    if isinstance(value, dict):
        return {k: _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return scrub_value(value, key=key)


def _bound_fields() -> dict[str, str]:
    import structlog

    fields = structlog.contextvars.get_contextvars()
    return {name: str(fields[name]) for name in TAG_FIELDS if fields.get(name) not in (None, "")}


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    tags = event.setdefault("tags", {})
    if isinstance(tags, dict):
        for name, value in _bound_fields().items():
            tags.setdefault(name, value)
    scrubbed: dict[str, Any] = _scrub(event)
    return scrubbed


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = _scrub(crumb)
    return scrubbed


def init_sentry(*, dsn: str, environment: str, traces_sample_rate: float, release: str | None = None) -> bool:
    """Start sentry-sdk with the Django and Dramatiq integrations; False (nothing started) without a DSN."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        integrations=[DjangoIntegration(), DramatiqIntegration()],
        send_default_pii=False,
        include_local_variables=False,
        before_send=before_send,  # type: ignore[arg-type]
        before_send_transaction=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,
    )
    return True
