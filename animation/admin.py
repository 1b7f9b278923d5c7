"""Animation attempt admin: previews and HD results played in the page, full errors, and the staff actions.

On top of requeue, cancel and resend (``jobs.admin_attempts``): requeue and cancel also
reach an animation's HD run (the second run on the same row), and "Generate the HD
result" calls ``hd_result_generate``, the service billing calls once a payment clears,
so staff can grant or retry an HD result (it marks the HD result as paid for).
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from animation.models import AnimationAttempt
from animation.services import AnimationNotReady, hd_result_generate
from jobs.admin_attempts import ACTIONS, LIST_DISPLAY, RUN_FIELDS, AttemptAdmin, report
from jobs.admin_display import (
    EMPTY,
    duration_text,
    error_full,
    outcome_report,
    progress_bar,
    status_badge,
    thumbnail,
    video_player,
)
from jobs.attempts import HD, MAIN, Stage, attempt_cancel, attempt_requeue
from jobs.models import AttemptStatus

FINISHED = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELED)
IN_FLIGHT = (AttemptStatus.QUEUED, AttemptStatus.RUNNING)
REQUEUEABLE = (AttemptStatus.FAILED, AttemptStatus.CANCELED)


@admin.register(AnimationAttempt)
class AnimationAttemptAdmin(AttemptAdmin[AnimationAttempt]):
    list_display = (*LIST_DISPLAY, "preview", "hd")
    list_filter = ["status", "hd_status", "hd_paid", "workflow", "engine", "queued_at"]
    actions = (*ACTIONS, "generate_hd_result")
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

    @admin.display(description="HD", ordering="hd_status")
    def hd(self, obj: AnimationAttempt) -> SafeString:
        return format_html("{}{}", status_badge(obj.hd_status), " paid" if obj.hd_paid else "")

    @admin.display(description="restore")
    def restore_link(self, obj: AnimationAttempt) -> SafeString:
        url = reverse("admin:restoration_restoreattempt_change", args=[obj.restore_id])
        return format_html('<a href="{}">Restore attempt {}</a>', url, obj.restore_id)

    @admin.display(description="preview")
    def preview_player(self, obj: AnimationAttempt) -> SafeString | str:
        return video_player(obj.preview_key, poster_key=obj.thumbnail_key)

    @admin.display(description="HD result")
    def hd_player(self, obj: AnimationAttempt) -> SafeString | str:
        return video_player(obj.hd_result_key, poster_key=obj.thumbnail_key)

    @admin.display(description="HD status")
    def hd_status_badge(self, obj: AnimationAttempt) -> SafeString:
        return status_badge(obj.hd_status)

    @admin.display(description="HD progress")
    def hd_progress_bar(self, obj: AnimationAttempt) -> SafeString | str:
        return progress_bar(obj.hd_progress, obj.hd_status) if obj.hd_status else EMPTY

    @admin.display(description="HD duration")
    def hd_duration(self, obj: AnimationAttempt) -> str:
        return duration_text(obj.hd_started_at, obj.hd_finished_at)

    @admin.display(description="HD error")
    def hd_error_detail(self, obj: AnimationAttempt) -> SafeString | str:
        return error_full(obj.hd_error_type, obj.hd_error_message, obj.hd_error_details)

    # --- actions ----------------------------------------------------------------

    def stage_for_email(self, attempt: AnimationAttempt) -> Stage:
        # The newest news: the HD result's email once it has ended, else the preview's.
        return HD if attempt.hd_status in FINISHED else MAIN

    def requeue_one(self, attempt: AnimationAttempt) -> bool:
        if attempt_requeue(attempt):
            return True
        return attempt.hd_status in REQUEUEABLE and attempt_requeue(attempt, stage=HD)

    def cancel_one(self, attempt: AnimationAttempt) -> bool:
        if attempt_cancel(attempt):
            return True
        return attempt.hd_status in IN_FLIGHT and attempt_cancel(attempt, stage=HD)

    @admin.action(description="Generate the HD result (marks it paid for)", permissions=["change"])
    def generate_hd_result(self, request: HttpRequest, queryset: QuerySet[AnimationAttempt]) -> None:
        done, skipped = 0, []
        for attempt in queryset.order_by("queued_at"):
            try:
                queued = hd_result_generate(animation=attempt)
            except AnimationNotReady:
                skipped.append("whose preview had not succeeded")
                continue
            if queued:
                done += 1
            else:
                hd_status = AnimationAttempt.objects.filter(pk=attempt.pk).values_list("hd_status", flat=True).first()
                skipped.append(f"with an HD run already {hd_status}" if hd_status else "already handled")
        report(request, self, outcome_report("Queued the HD result of", done, skipped, noun="animation"), done)
