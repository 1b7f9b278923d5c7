"""How the staff console shows attempts: status badges, progress, durations, outputs, errors, action reports.

Shared by the job, restore attempt and animation attempt admins. Everything that
ends up in a page is built with ``format_html`` (errors, node messages, emails and
keys are not ours to trust), and outputs are shown through short-lived URLs from
``rekindle.storage.url_for`` (presigned on S3); the database only holds keys.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.models import AttemptStatus
from rekindle import storage

EMPTY = "—"


def status_badge(status: str) -> SafeString:
    if not status:
        return format_html('<span class="rk-status rk-status-none">{}</span>', "none")
    label = AttemptStatus(status).label if status in AttemptStatus.values else status
    return format_html('<span class="rk-status rk-status-{}">{}</span>', status, label)


def progress_bar(progress: int, status: str) -> SafeString:
    value = 100 if status == AttemptStatus.SUCCEEDED else max(0, min(100, progress))
    return format_html(
        '<span class="rk-progress" title="{}%"><span style="width: {}%"></span></span> {}%', value, value, value
    )


def duration_text(started_at: datetime | None, finished_at: datetime | None) -> str:
    if started_at is None or finished_at is None:
        return EMPTY
    seconds = (finished_at - started_at).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def short_id(value: Any) -> str:
    return str(value)[:8]


def output_url(key: str, request: HttpRequest | None = None) -> str | None:
    """A URL for a stored output, or None when there is none (or storage cannot make one)."""
    if not key:
        return None
    try:
        return storage.url_for(key, request)
    except Exception:  # a misconfigured storage must not take the admin page down with it
        return None


def thumbnail(key: str, request: HttpRequest | None = None, *, alt: str = "") -> SafeString | str:
    url = output_url(key, request)
    if url is None:
        return EMPTY
    return format_html(
        '<a href="{}" target="_blank" rel="noopener"><img src="{}" class="rk-thumb" alt="{}" loading="lazy"></a>',
        url,
        url,
        alt,
    )


def image_preview(key: str, request: HttpRequest | None = None) -> SafeString | str:
    url = output_url(key, request)
    if url is None:
        return EMPTY
    return format_html(
        '<a href="{}" target="_blank" rel="noopener"><img src="{}" class="rk-preview" alt="{}"></a><br><code>{}</code>',
        url,
        url,
        key,
        key,
    )


def video_player(key: str, request: HttpRequest | None = None, *, poster_key: str = "") -> SafeString | str:
    url = output_url(key, request)
    if url is None:
        return EMPTY
    poster = output_url(poster_key, request) or ""
    return format_html(
        '<video class="rk-video" controls preload="metadata" src="{}" poster="{}"></video>'
        '<br><a href="{}" target="_blank" rel="noopener">Open</a> <code>{}</code>',
        url,
        poster,
        url,
        key,
    )


def error_summary(error_type: str, error_message: str, *, limit: int = 120) -> SafeString | str:
    if not error_type and not error_message:
        return EMPTY
    message = error_message if len(error_message) <= limit else error_message[: limit - 1] + "…"
    return format_html(
        '<span class="rk-error-short" title="{}"><strong>{}</strong> {}</span>', error_message, error_type, message
    )


def error_full(error_type: str, error_message: str, details: Mapping[str, Any] | None) -> SafeString | str:
    """The whole error: code, message, the node's own message and node errors, and every detail."""
    if not error_type and not error_message and not details:
        return EMPTY
    details = dict(details or {})
    parts = [format_html("<p><strong>{}</strong></p>", error_type or "error")]
    if error_message:
        parts.append(format_html('<div class="rk-error">{}</div>', error_message))
    node_message = details.get("exception_message")
    if node_message:
        where = " ".join(str(details[k]) for k in ("node_type", "node_id") if details.get(k))
        parts.append(
            format_html(
                '<p>The node said{}{}:</p><div class="rk-error">{}: {}</div>',
                " in " if where else "",
                where,
                details.get("exception_type") or "Exception",
                node_message,
            )
        )
    node_errors = details.get("node_errors")
    if isinstance(node_errors, Mapping) and node_errors:
        parts.append(
            format_html(
                "<p>Node errors:</p><ul>{}</ul>",
                format_html_join(
                    "",
                    "<li><code>{}</code> {}</li>",
                    ((node_id, json.dumps(error, default=str)[:500]) for node_id, error in node_errors.items()),
                ),
            )
        )
    if details:
        parts.append(
            format_html(
                '<details><summary>All details</summary><pre class="rk-error">{}</pre></details>',
                json.dumps(details, indent=2, sort_keys=True, default=str),
            )
        )
    return format_html_join("", "{}", ((part,) for part in parts))


def pretty_json(value: Any) -> SafeString:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


# Why an action left an attempt alone, said of one and of several.
SKIP_REASONS: dict[str, tuple[str, str]] = {
    AttemptStatus.QUEUED: ("that was queued", "that were queued"),
    AttemptStatus.RUNNING: ("that was running", "that were running"),
    AttemptStatus.SUCCEEDED: ("that had succeeded", "that had succeeded"),
    AttemptStatus.FAILED: ("that had failed", "that had failed"),
    AttemptStatus.CANCELED: ("that was canceled", "that were canceled"),
}


def outcome_report(verb: str, done: int, skipped: Iterable[str], *, noun: str = "attempt") -> str:
    """What an action did, e.g. ``Requeued 3 attempts, skipped 1 that was running and 2 that were queued``.

    ``skipped`` holds one reason per attempt left alone: a status (worded from
    ``SKIP_REASONS``) or a phrase that reads after "1 ..." / "2 ...".
    """
    text = f"{verb} {done} {noun if done == 1 else noun + 's'}"
    counts = Counter(skipped)
    if counts:
        pieces = []
        for reason, n in sorted(counts.items()):
            singular, plural = SKIP_REASONS.get(reason, (reason, reason))
            pieces.append(f"{n} {singular if n == 1 else plural}")
        joined = pieces[0] if len(pieces) == 1 else ", ".join(pieces[:-1]) + " and " + pieces[-1]
        text += f", skipped {joined}"
    return text
