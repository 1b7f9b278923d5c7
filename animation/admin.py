"""Animation and HD result admin: previews and HD videos played in the page, full errors, and the staff actions.

On top of requeue, cancel and resend (``jobs.admin_attempts``), an animation's own
actions also reach its HD run, so support can act from the animation a person asks
about. Paying for an HD result is billing's: it adds "grant the HD result as a comp" to
this list through :func:`register_animation_action` (this app does not know billing).
HD results also have a list of their own, with the same actions. The job admin gets the
animations inline, the latest animation's state, the animation count and an HD filter
(``JobAdminPart``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from animation.models import AnimationAttempt, HDAttempt
from jobs.admin import (
    INLINE_FIELDS,
    AttemptInlineBase,
    JobAdminPart,
    LatestAttemptStatusFilter,
    count_of,
    latest_of,
    register_job_admin_part,
)
from jobs.admin_attempts import ACTIONS, LIST_DISPLAY, RUN_FIELDS, AttemptAdmin
from jobs.admin_display import (
    EMPTY,
    duration_text,
    error_full,
    progress_bar,
    status_badge,
    thumbnail,
    video_player,
)
from jobs.attempts import REQUEUEABLE_STATUSES, attempt_cancel, attempt_requeue
from jobs.models import IN_FLIGHT_STATUSES, Attempt, AttemptStatus, Job

FINISHED = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELED)

# Admin actions other apps add to the animation list (``@admin.action`` functions).
_extra_actions: list[Callable[..., Any]] = []


def register_animation_action(action: Callable[..., Any]) -> None:
    """Add an admin action to the animation list, from another app's ``admin`` module."""
    if action not in _extra_actions:
        _extra_actions.append(action)


def _hd_badge(animation: AnimationAttempt) -> SafeString:
    hd = animation.hd_attempt
    return format_html("{}{}", status_badge(hd.status if hd else ""), " paid" if animation.hd_paid else "")


@admin.register(AnimationAttempt)
class AnimationAttemptAdmin(AttemptAdmin[AnimationAttempt]):
    list_display = (*LIST_DISPLAY, "preview", "hd")
    list_filter = ["status", "hd__status", "hd_paid", "workflow", "engine", "queued_at"]
    list_select_related = ["job", "hd"]

    # A property, read at each request, so that actions registered after this class are there too.
    @property
    def actions(self) -> tuple[Any, ...]:  # type: ignore[override]
        return (*ACTIONS, *_extra_actions)

    fieldsets = [
        (
            None,
            {"fields": ["id", "job_link", "restore_link", "status_badge", "progress", "workflow", "parameters_json"]},
        ),
        ("Preview", {"fields": ["preview_player"]}),
        ("Error", {"fields": ["error_detail"]}),
        ("Run", {"fields": [*RUN_FIELDS]}),
        (
            "HD result",
            {
                "fields": [
                    "hd_paid",
                    "hd_link",
                    "hd_status_badge",
                    "hd_progress_bar",
                    "hd_player",
                    "hd_error_detail",
                    "hd_engine",
                    "hd_node",
                    "hd_prompt_id",
                    "hd_tries",
                    "hd_queued_at",
                    "hd_started_at",
                    "hd_finished_at",
                    "hd_duration",
                    "hd_notified_at",
                ]
            },
        ),
    ]

    # --- columns --------------------------------------------------------------

    @admin.display(description="preview")
    def preview(self, obj: AnimationAttempt) -> SafeString | str:
        if obj.thumbnail_key:
            return thumbnail(obj.thumbnail_key, alt="animation")
        return EMPTY

    @admin.display(description="HD", ordering="hd__status")
    def hd(self, obj: AnimationAttempt) -> SafeString:
        return _hd_badge(obj)

    @admin.display(description="restore")
    def restore_link(self, obj: AnimationAttempt) -> SafeString:
        url = reverse("admin:restoration_restoreattempt_change", args=[obj.restore_id])
        return format_html('<a href="{}">Restore attempt {}</a>', url, obj.restore_id)

    @admin.display(description="preview")
    def preview_player(self, obj: AnimationAttempt) -> SafeString | str:
        return video_player(obj.preview_key, poster_key=obj.thumbnail_key)

    # The HD run's facts, read from its own row (empty until it is asked for).

    def _hd_value(self, obj: AnimationAttempt, name: str) -> Any:
        hd = obj.hd_attempt
        value = getattr(hd, name) if hd is not None else None
        return EMPTY if value in (None, "") else value

    @admin.display(description="HD attempt")
    def hd_link(self, obj: AnimationAttempt) -> SafeString | str:
        hd = obj.hd_attempt
        if hd is None:
            return EMPTY
        url = reverse("admin:animation_hdattempt_change", args=[hd.pk])
        return format_html('<a href="{}">HD result {}</a>', url, hd.pk)

    @admin.display(description="HD result")
    def hd_player(self, obj: AnimationAttempt) -> SafeString | str:
        hd = obj.hd_attempt
        return video_player(hd.result_key, poster_key=obj.thumbnail_key) if hd is not None else EMPTY

    @admin.display(description="HD status")
    def hd_status_badge(self, obj: AnimationAttempt) -> SafeString:
        hd = obj.hd_attempt
        return status_badge(hd.status if hd is not None else "")

    @admin.display(description="HD progress")
    def hd_progress_bar(self, obj: AnimationAttempt) -> SafeString | str:
        hd = obj.hd_attempt
        return progress_bar(hd.progress, hd.status) if hd is not None else EMPTY

    @admin.display(description="HD duration")
    def hd_duration(self, obj: AnimationAttempt) -> str:
        hd = obj.hd_attempt
        return duration_text(hd.started_at, hd.finished_at) if hd is not None else EMPTY

    @admin.display(description="HD error")
    def hd_error_detail(self, obj: AnimationAttempt) -> SafeString | str:
        hd = obj.hd_attempt
        return error_full(hd.error_type, hd.error_message, hd.error_details) if hd is not None else EMPTY

    @admin.display(description="HD engine")
    def hd_engine(self, obj: AnimationAttempt) -> Any:
        hd = obj.hd_attempt
        return hd.engine_label if hd is not None and hd.engine else EMPTY

    @admin.display(description="HD node")
    def hd_node(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "node")

    @admin.display(description="HD prompt id")
    def hd_prompt_id(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "prompt_id")

    @admin.display(description="HD tries")
    def hd_tries(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "tries")

    @admin.display(description="HD queued at")
    def hd_queued_at(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "queued_at")

    @admin.display(description="HD started at")
    def hd_started_at(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "started_at")

    @admin.display(description="HD finished at")
    def hd_finished_at(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "finished_at")

    @admin.display(description="HD email sent at")
    def hd_notified_at(self, obj: AnimationAttempt) -> Any:
        return self._hd_value(obj, "notified_at")

    # --- actions ----------------------------------------------------------------

    def email_attempt(self, attempt: AnimationAttempt) -> Attempt:
        # The newest news: the HD result's email once it has ended, else the preview's.
        hd = attempt.hd_attempt
        return hd if hd is not None and hd.status in FINISHED else attempt

    def requeue_one(self, attempt: AnimationAttempt) -> bool:
        if attempt_requeue(attempt):
            return True
        hd = attempt.hd_attempt
        return hd is not None and hd.status in REQUEUEABLE_STATUSES and attempt_requeue(hd)

    def cancel_one(self, attempt: AnimationAttempt) -> bool:
        if attempt_cancel(attempt):
            return True
        hd = attempt.hd_attempt
        return hd is not None and hd.status in IN_FLIGHT_STATUSES and attempt_cancel(hd)


@admin.register(HDAttempt)
class HDAttemptAdmin(AttemptAdmin[HDAttempt]):
    list_display = (*LIST_DISPLAY, "paid", "video")
    list_select_related = ["job", "animation"]
    fieldsets = [
        (None, {"fields": ["id", "job_link", "animation_link", "paid", "status_badge", "progress", "workflow"]}),
        ("HD video", {"fields": ["video_player"]}),
        ("Parameters", {"fields": ["parameters_json"]}),
        ("Error", {"fields": ["error_detail"]}),
        ("Run", {"fields": [*RUN_FIELDS]}),
    ]

    @admin.display(description="paid", boolean=True, ordering="animation__hd_paid")
    def paid(self, obj: HDAttempt) -> bool:
        return obj.animation.hd_paid

    @admin.display(description="video")
    def video(self, obj: HDAttempt) -> SafeString | str:
        return "video" if obj.result_key else EMPTY

    @admin.display(description="animation")
    def animation_link(self, obj: HDAttempt) -> SafeString:
        url = reverse("admin:animation_animationattempt_change", args=[obj.animation_id])
        return format_html('<a href="{}">Animation attempt {}</a>', url, obj.animation_id)

    @admin.display(description="HD video")
    def video_player(self, obj: HDAttempt) -> SafeString | str:
        return video_player(obj.result_key, poster_key=obj.animation.thumbnail_key)


# --- On the job's admin page and in the job list ---------------------------------------


class AnimationAttemptInline(AttemptInlineBase):
    model = AnimationAttempt
    verbose_name_plural = "animation attempts"
    fields = (*INLINE_FIELDS, "hd", "preview")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[AnimationAttempt]:
        return super().get_queryset(request).select_related("hd")

    @admin.display(description="HD")
    def hd(self, obj: AnimationAttempt) -> SafeString:
        return _hd_badge(obj)

    @admin.display(description="preview")
    def preview(self, obj: AnimationAttempt) -> SafeString | str:
        return thumbnail(obj.thumbnail_key) if obj.thumbnail_key else (EMPTY if not obj.preview_key else "video")


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


@admin.display(description="latest animation", ordering="latest_animation_status")
def latest_animation_badge(job: Job) -> SafeString:
    return status_badge(getattr(job, "latest_animation_status", None) or "")


@admin.display(description="animations")
def animation_count(job: Job) -> int:
    return int(getattr(job, "animation_count", 0))


@admin.display(description="HD", boolean=True, ordering="has_hd")
def has_hd(job: Job) -> bool:
    return bool(getattr(job, "has_hd", False))


register_job_admin_part(
    JobAdminPart(
        inline=AnimationAttemptInline,
        annotations=lambda: {
            "latest_animation_status": latest_of(AnimationAttempt),
            "animation_count": count_of(AnimationAttempt),
            "has_hd": Exists(HDAttempt.objects.filter(job=OuterRef("pk")).exclude(result_key="")),
            "hd_paid": Exists(AnimationAttempt.objects.filter(job=OuterRef("pk"), hd_paid=True)),
        },
        columns=[latest_animation_badge, animation_count, has_hd],
        filters=[LatestAnimationStatusFilter, HasHDFilter],
    )
)
