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
from typing import Any

from django.contrib import admin, messages
from django.db.models import CharField, Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Cast, Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from animation.models import AnimationAttempt
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
from jobs.models import AttemptStatus, Job
from jobs.services import job_delete
from restoration.models import RestoreAttempt

ADMIN_CSS = {"all": ["rekindle/admin.css"]}
_HEX_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")


def _latest(model: type[RestoreAttempt] | type[AnimationAttempt], field: str = "status") -> Subquery:
    return Subquery(model.objects.filter(job=OuterRef("pk")).order_by("-queued_at").values(field)[:1])


def _count(model: type[RestoreAttempt] | type[AnimationAttempt]) -> Coalesce:
    counted = model.objects.filter(job=OuterRef("pk")).order_by().values("job").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def jobs_for_admin_list(queryset: QuerySet[Job]) -> QuerySet[Job]:
    """The job list's rows with everything its columns and filters read, in one query."""
    return queryset.select_related("selected_restore", "owner").annotate(
        latest_restore_status=_latest(RestoreAttempt),
        latest_animation_status=_latest(AnimationAttempt),
        restore_count=_count(RestoreAttempt),
        animation_count=_count(AnimationAttempt),
        has_hd=Exists(AnimationAttempt.objects.filter(job=OuterRef("pk")).exclude(hd_result_key="")),
        hd_paid=Exists(AnimationAttempt.objects.filter(job=OuterRef("pk"), hd_paid=True)),
    )


class LatestAttemptStatusFilter(admin.SimpleListFilter):
    """Jobs by the status of their newest attempt of one kind (or: none yet)."""

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


class LatestRestoreStatusFilter(LatestAttemptStatusFilter):
    title = "latest restore"
    parameter_name = "latest_restore"
    annotation = "latest_restore_status"


class LatestAnimationStatusFilter(LatestAttemptStatusFilter):
    title = "latest animation"
    parameter_name = "latest_animation"
    annotation = "latest_animation_status"


class HasHDFilter(admin.SimpleListFilter):
    title = "HD result"
    parameter_name = "hd"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Has an HD result"), ("paid", "Paid for"), ("no", "No HD result")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "yes":
            return queryset.filter(has_hd=True)
        if value == "paid":
            return queryset.filter(hd_paid=True)
        if value == "no":
            return queryset.filter(has_hd=False)
        return queryset


def attempt_search(queryset: QuerySet[Any], term: str, *, job_field: str) -> QuerySet[Any]:
    """Rows matching a search term: an exact id, an id prefix (as shown in lists), or part of the email.

    ``job_field`` is the path from the row to its job ("" for jobs themselves). A full
    UUID also finds the job an attempt id belongs to.
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
            condition |= Q(pk__in=RestoreAttempt.objects.filter(pk=exact).values("job_id"))
            condition |= Q(pk__in=AnimationAttempt.objects.filter(pk=exact).values("job_id"))
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
    def short(self, obj: RestoreAttempt | AnimationAttempt) -> str:
        return short_id(obj.pk)

    @admin.display(description="status")
    def status_badge(self, obj: RestoreAttempt | AnimationAttempt) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="progress")
    def progress_bar(self, obj: RestoreAttempt | AnimationAttempt) -> SafeString:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="duration")
    def duration(self, obj: RestoreAttempt | AnimationAttempt) -> str:
        return duration_text(obj.started_at, obj.finished_at)

    @admin.display(description="error")
    def error(self, obj: RestoreAttempt | AnimationAttempt) -> SafeString | str:
        return error_summary(obj.error_type, obj.error_message)


class RestoreAttemptInline(AttemptInlineBase):
    model = RestoreAttempt
    verbose_name_plural = "restore attempts"
    fields = (*INLINE_FIELDS, "result")
    readonly_fields = fields

    @admin.display(description="result")
    def result(self, obj: RestoreAttempt) -> SafeString | str:
        return thumbnail(obj.result_key)


class AnimationAttemptInline(AttemptInlineBase):
    model = AnimationAttempt
    verbose_name_plural = "animation attempts"
    fields = (*INLINE_FIELDS, "hd", "preview")
    readonly_fields = fields

    @admin.display(description="HD")
    def hd(self, obj: AnimationAttempt) -> SafeString:
        paid = " (paid)" if obj.hd_paid else ""
        return format_html("{}{}", status_badge(obj.hd_status), paid)

    @admin.display(description="preview")
    def preview(self, obj: AnimationAttempt) -> SafeString | str:
        return thumbnail(obj.thumbnail_key) if obj.thumbnail_key else (EMPTY if not obj.preview_key else "video")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = [
        "short",
        "email",
        "created_at",
        "original",
        "selected",
        "latest_restore_badge",
        "latest_animation_badge",
        "attempts",
        "hd",
    ]
    list_display_links = ["short"]
    list_filter = [LatestRestoreStatusFilter, LatestAnimationStatusFilter, HasHDFilter, "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["email"]
    search_help_text = "Email (or part of it), a job or attempt id, or the first characters of a job id."
    list_per_page = 50
    show_full_result_count = False
    raw_id_fields = ["owner", "selected_restore", "latest_animation"]
    inlines = [RestoreAttemptInline, AnimationAttemptInline]
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

    @admin.display(description="latest restore", ordering="latest_restore_status")
    def latest_restore_badge(self, obj: Job) -> SafeString:
        return status_badge(getattr(obj, "latest_restore_status", None) or "")

    @admin.display(description="latest animation", ordering="latest_animation_status")
    def latest_animation_badge(self, obj: Job) -> SafeString:
        return status_badge(getattr(obj, "latest_animation_status", None) or "")

    @admin.display(description="restores / animations")
    def attempts(self, obj: Job) -> str:
        return f"{getattr(obj, 'restore_count', 0)} / {getattr(obj, 'animation_count', 0)}"

    @admin.display(description="HD", boolean=True, ordering="has_hd")
    def hd(self, obj: Job) -> bool:
        return bool(getattr(obj, "has_hd", False))

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
        attempt_names = {str(RestoreAttempt._meta.verbose_name), str(AnimationAttempt._meta.verbose_name)}
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
