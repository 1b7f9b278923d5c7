"""Job admin: find a person's job, see its photos and every attempt at a glance, delete it with its files.

The list is built so that its query count does not depend on the number of rows:
the latest attempt states, attempt counts and "has HD" are subqueries of the one list
query, and the selected restore comes with it through ``select_related``. Jobs are
made by uploads, never here; every field is read-only, and deleting goes through
``job_delete`` (the API's service), which removes the files after commit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import CharField, Count, Expression, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast, Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.admin_display import (
    EMPTY,
    duration_text,
    error_summary,
    image_preview,
    progress_bar,
    short_id,
    status_badge,
    thumbnail,
)
from jobs.kinds import attempt_kinds
from jobs.models import Attempt, AttemptStatus, FileCleanup, Job
from jobs.services import job_delete

ADMIN_CSS = {"all": ["rekindle/admin.css"]}
_HEX_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")


# --- What each app adds to the job admin --------------------------------------


@dataclass
class JobAdminPart:
    """What one app adds to the job list and the job's page, registered from the app's own ``admin`` module.

    ``annotations`` are made into subqueries of the list's one query (so the query count
    does not grow with rows); ``columns`` and ``filters`` read them.
    """

    inline: type[InlineModelAdmin[Any, Any]] | None = None
    annotations: Callable[[], dict[str, Expression | Subquery | Coalesce]] = dict
    columns: list[Callable[[Job], Any]] = field(default_factory=list)
    filters: list[type[admin.ListFilter]] = field(default_factory=list)


_parts: list[JobAdminPart] = []


def register_job_admin_part(part: JobAdminPart) -> None:
    if part not in _parts:
        _parts.append(part)


def _of_job(model: type[Attempt]) -> QuerySet[Any]:
    """The attempts of ``model`` belonging to the list row's job (every kind has a ``job`` foreign key)."""
    rows: QuerySet[Any] = model._default_manager.all()
    return rows.filter(job=OuterRef("pk"))


def latest_of(model: type[Attempt], field_name: str = "status") -> Subquery:
    """A subquery of the list query: ``field_name`` of the job's newest attempt of ``model``."""
    return Subquery(_of_job(model).order_by("-queued_at").values(field_name)[:1])


def count_of(model: type[Attempt]) -> Coalesce:
    """A subquery of the list query: how many attempts of ``model`` the job has."""
    counted = _of_job(model).order_by().values("job").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def jobs_for_admin_list(queryset: QuerySet[Job]) -> QuerySet[Job]:
    """The job list's rows with everything its columns and filters read, in one query."""
    annotations: dict[str, Any] = {}
    for part in _parts:
        annotations.update(part.annotations())
    return queryset.select_related("selected_restore", "owner").annotate(**annotations)


class LatestAttemptStatusFilter(admin.SimpleListFilter):
    """Jobs by the status of their newest attempt of one kind (or: none yet); subclasses name the annotation."""

    annotation = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*AttemptStatus.choices, ("none", "No attempt yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "none":
            return queryset.filter(**{f"{self.annotation}__isnull": True})
        if value in AttemptStatus.values:
            return queryset.filter(**{self.annotation: value})
        return queryset


def attempt_search(queryset: QuerySet[Any], term: str, *, job_field: str) -> QuerySet[Any]:
    """Rows matching a search term: an exact id, an id prefix (as shown in lists), or part of the email.

    ``job_field`` is the path from the row to its job ("" for jobs themselves). A full
    UUID also finds the job an attempt id (of any kind) belongs to.
    """
    term = term.strip().lower()
    if not term:
        return queryset
    prefix = f"{job_field}__" if job_field else ""
    condition = Q(**{f"{prefix}email__icontains": term})
    try:
        exact = uuid.UUID(term)
    except ValueError:
        exact = None
    if exact is not None:
        condition |= Q(pk=exact)
        if job_field:
            condition |= Q(**{f"{job_field}_id": exact})
        else:
            for kind in attempt_kinds():
                condition |= Q(pk__in=kind.rows().filter(pk=exact).values("job_id"))
    elif _HEX_PREFIX.match(term):
        queryset = queryset.annotate(_id_text=Cast("pk", CharField()))
        condition |= Q(_id_text__startswith=term)
    return queryset.filter(condition)


INLINE_FIELDS: tuple[str, ...] = (
    "short",
    "status_badge",
    "progress_bar",
    "workflow",
    "duration",
    "node",
    "error",
    "queued_at",
)


class AttemptInlineBase(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = INLINE_FIELDS
    readonly_fields = INLINE_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="id")
    def short(self, obj: Attempt) -> str:
        return short_id(obj.pk)

    @admin.display(description="status")
    def status_badge(self, obj: Attempt) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="progress")
    def progress_bar(self, obj: Attempt) -> SafeString:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="duration")
    def duration(self, obj: Attempt) -> str:
        return duration_text(obj.started_at, obj.finished_at)

    @admin.display(description="error")
    def error(self, obj: Attempt) -> SafeString | str:
        return error_summary(obj.error_type, obj.error_message)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    # Each app adds its columns, filters and inline (JobAdminPart), after these.
    list_display = ["short", "email", "created_at", "original", "selected"]
    list_display_links = ["short"]
    list_filter = ["created_at"]
    date_hierarchy = "created_at"
    search_fields = ["email"]
    search_help_text = "Email (or part of it), a job or attempt id, or the first characters of a job id."
    list_per_page = 50
    show_full_result_count = False
    raw_id_fields = ["owner", "selected_restore", "latest_animation"]
    fieldsets = [
        (None, {"fields": ["id", "email", "owner", "created_at", "updated_at"]}),
        (
            "Original",
            {
                "fields": [
                    "original_preview",
                    "original_format",
                    "original_width",
                    "original_height",
                    "original_bytes",
                    "original_sha256",
                ]
            },
        ),
        ("Chosen results", {"fields": ["selected_preview", "latest_animation_link"]}),
    ]
    readonly_fields = [
        "id",
        "email",
        "owner",
        "created_at",
        "updated_at",
        "original_preview",
        "original_format",
        "original_width",
        "original_height",
        "original_bytes",
        "original_sha256",
        "selected_preview",
        "latest_animation_link",
    ]

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return jobs_for_admin_list(super().get_queryset(request))

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return [*self.list_display, *(column for part in _parts for column in part.columns)]

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        return [*(f for part in _parts for f in part.filters), *self.list_filter]

    def get_inlines(self, request: HttpRequest, obj: Job | None) -> list[type[InlineModelAdmin[Any, Any]]]:
        return [part.inline for part in _parts if part.inline is not None]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        return attempt_search(queryset, search_term, job_field=""), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Nothing on the page is editable: no Save buttons, only Delete and the actions.
        extra_context = {**(extra_context or {}), "show_save": False, "show_save_and_continue": False}
        extra_context["show_save_and_add_another"] = False
        return super().change_view(request, object_id, form_url, extra_context)

    # --- columns --------------------------------------------------------------

    @admin.display(description="job", ordering="id")
    def short(self, obj: Job) -> str:
        return short_id(obj.pk)

    @admin.display(description="original")
    def original(self, obj: Job) -> SafeString | str:
        return thumbnail(obj.original_key, alt="original")

    @admin.display(description="selected restore")
    def selected(self, obj: Job) -> SafeString | str:
        restore = obj.selected_restore
        if restore is None or not restore.result_key:
            return EMPTY
        return thumbnail(restore.result_key, alt="selected restore")

    @admin.display(description="original")
    def original_preview(self, obj: Job) -> SafeString | str:
        return image_preview(obj.original_key)

    @admin.display(description="selected restore")
    def selected_preview(self, obj: Job) -> SafeString | str:
        restore = obj.selected_restore
        if restore is None:
            return EMPTY
        link = reverse("admin:restoration_restoreattempt_change", args=[restore.pk])
        preview = image_preview(restore.result_key)
        return format_html('{}<br><a href="{}">Restore attempt {}</a>', preview, link, restore.pk)

    @admin.display(description="latest animation")
    def latest_animation_link(self, obj: Job) -> SafeString | str:
        if obj.latest_animation_id is None:
            return EMPTY
        link = reverse("admin:animation_animationattempt_change", args=[obj.latest_animation_id])
        return format_html('<a href="{}">Animation attempt {}</a>', link, obj.latest_animation_id)

    # --- deleting goes through the service --------------------------------------

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[Any], list[Any]]:
        to_delete, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Attempts cannot be deleted on their own (they are the record of what ran), but
        # they go with their job: only the permission to delete jobs counts here.
        attempt_names = {str(kind.model._meta.verbose_name) for kind in attempt_kinds()}
        return to_delete, counts, {name for name in perms_needed if str(name) not in attempt_names}, protected

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        job_delete(job=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        jobs = list(queryset.order_by())
        for job in jobs:
            job_delete(job=job)
        self.message_user(
            request,
            f"The files of {len(jobs)} job{'s' if len(jobs) != 1 else ''} are being removed from storage.",
            messages.INFO,
        )


@admin.register(FileCleanup)
class FileCleanupAdmin(admin.ModelAdmin[FileCleanup]):
    """Removals of deleted jobs' files still owed, read-only: a row that stays says the cleanup keeps failing."""

    list_display = ("job_id", "created_at", "last_enqueued_at", "attempts")
    search_fields = ("job_id",)
    readonly_fields = ("job_id", "created_at", "last_enqueued_at", "attempts")
    ordering = ("created_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
