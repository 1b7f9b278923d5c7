"""The kinds of work an attempt can be, registered by the apps that own them.

The attempt lifecycle (``jobs.attempts``, ``jobs.runner``), the job's API answer, the job
admin, retention and the cron commands are generic: they never import the apps that do
the work. Each of those apps declares its kinds from its ``AppConfig.ready()`` instead,
the way paperless-ngx registers its document parsers::

    register_kind(AttemptKind(name="restore", model=RestoreAttempt, actor=process_restoration, ...))

Adding a kind of work is then one model on the ``jobs.models.Attempt`` base, one actor,
one work function and one registration, in its own app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from django.db.models import Q
from django.utils.module_loading import import_string

from jobs.models import Attempt

if TYPE_CHECKING:
    from jobs.runner import RunContext, RunOutput


class MessageSender(Protocol):
    """What the lifecycle needs of a Dramatiq actor: send it an attempt's id."""

    def send(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class AttemptKind:
    """One kind of work: its model, the actor that runs it, what one run does, and where its outputs go."""

    # Also the workflow kind it runs (``REKINDLE_WORKFLOW_<NAME>`` picks the workflow file).
    name: str
    model: type[Attempt]
    # Sent the attempt's id, after commit, whenever the attempt is queued.
    actor: MessageSender
    # The slow part of one run, called by ``jobs.runner.attempt_process`` with no transaction open.
    work: Callable[[RunContext[Any]], RunOutput]
    # What the person gets from it and what it does, in their words ("restored photo", "restore this photo"):
    # emails and the messages of its errors say them.
    noun: str
    action: str
    # How staff lists name it ("restore", "animation", "HD").
    label: str
    # The model's fields that hold storage keys of what it made (retention checks them against storage).
    output_fields: tuple[str, ...]
    # The service that queues a new attempt of this kind for a job (``create(job=..., params=...)``),
    # for callers that start work by kind name, such as the upload's ``restore=true``; None if it
    # is only ever made from another attempt.
    create: Callable[..., Attempt] | None = None
    # The Job's reverse accessor of these attempts when the job's API answer lists them itself, with the
    # dotted path of their output serializer; None for a kind shown inside another kind's answer.
    job_field: str | None = None
    serializer: str = ""
    # Relations that serializer reads, fetched in the same query (``select_related``).
    serializer_related: tuple[str, ...] = ()
    # Dotted path of an inline listing these attempts on the job's admin page ("": none).
    admin_inline: str = ""
    # Rows matching this hold something a person paid for: their job is never purged for age.
    keeps_job: Q | None = None
    # For a kind shown inside another kind's answer: the foreign key to that attempt ("animation"),
    # which the job's live events name so a page can show the progress in the right place.
    parent_field: str = ""

    def rows(self) -> Any:
        """Every row of the kind's model (a QuerySet of ``model``)."""
        return self.model._default_manager.all()

    def serializer_class(self) -> Any:
        return _imported(self.serializer)

    def admin_inline_class(self) -> Any:
        return _imported(self.admin_inline)


@cache
def _imported(path: str) -> Any:
    return import_string(path)


_kinds: dict[str, AttemptKind] = {}
_lock = threading.Lock()


def register_kind(kind: AttemptKind) -> None:
    """Add a kind; registering the same one again (a second ``ready()``) is harmless, a clash is not."""
    with _lock:
        known = _kinds.get(kind.name)
        if known is not None and known.model is not kind.model:
            raise ValueError(f"attempt kind {kind.name!r} is registered already, for {known.model.__name__}")
        if any(other.model is kind.model and other.name != kind.name for other in _kinds.values()):
            raise ValueError(f"{kind.model.__name__} already has an attempt kind")
        _kinds[kind.name] = kind


def attempt_kinds() -> tuple[AttemptKind, ...]:
    """Every registered kind, in registration order (the order of INSTALLED_APPS)."""
    return tuple(_kinds.values())


def kind_named(name: str) -> AttemptKind:
    try:
        return _kinds[name]
    except KeyError:
        raise LookupError(f"no attempt kind {name!r} is registered") from None


def kind_of(attempt: Attempt | type[Attempt]) -> AttemptKind:
    """The kind of an attempt (or of an attempt model)."""
    model = attempt if isinstance(attempt, type) else type(attempt)
    for kind in _kinds.values():
        if kind.model is model or issubclass(model, kind.model):
            return kind
    raise LookupError(f"no attempt kind is registered for {model.__name__}")
