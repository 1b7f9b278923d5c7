"""Restore attempt admin: every restoration with its result image, full error, and the staff actions.

Actions beyond requeue, cancel and resend (``jobs.admin_attempts``): make an attempt the
job's selected restore, through ``restore_select``, the service behind the API's
select-restore (the staff override when a person picked the wrong one). The job admin
gets the restores inline, the latest restore's state as a column and a filter, and the
restore count (``JobAdminPart``).
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from jobs.admin import (
    INLINE_FIELDS,
    AttemptInlineBase,
    JobAdminPart,
    LatestAttemptStatusFilter,
    count_of,
    latest_of,
    register_job_admin_part,
)
from jobs.admin_attempts import ACTIONS, LIST_DISPLAY, RUN_FIELDS, AttemptAdmin, report
from jobs.admin_display import image_preview, outcome_report, status_badge, thumbnail
from jobs.models import Job
from restoration.models import RestoreAttempt
from restoration.services import RestoreNotSelectable, restore_select


@admin.register(RestoreAttempt)
class RestoreAttemptAdmin(AttemptAdmin[RestoreAttempt]):
    list_display = (*LIST_DISPLAY, "result", "selected")
    actions = (*ACTIONS, "select_restore")
    fieldsets = [
        (None, {"fields": ["id", "job_link", "status_badge", "progress", "workflow", "parameters_json", "selected"]}),
        ("Result", {"fields": ["result_preview"]}),
        ("Error", {"fields": ["error_detail"]}),
        ("Run", {"fields": [*RUN_FIELDS]}),
    ]

    @admin.display(description="result")
    def result(self, obj: RestoreAttempt) -> SafeString | str:
        return thumbnail(obj.result_key, alt="restored")

    @admin.display(description="result")
    def result_preview(self, obj: RestoreAttempt) -> SafeString | str:
        return image_preview(obj.result_key)

    @admin.display(description="selected", boolean=True)
    def selected(self, obj: RestoreAttempt) -> bool:
        return obj.job.selected_restore_id == obj.pk

    @admin.action(description="Make it the job's selected restore", permissions=["change"])
    def select_restore(self, request: HttpRequest, queryset: QuerySet[RestoreAttempt]) -> None:
        done, skipped = 0, []
        chosen_jobs: set[object] = set()
        # Newest first: when several attempts of one job are ticked, the newest wins.
        for attempt in queryset.select_related("job").order_by("-queued_at"):
            if attempt.job_id in chosen_jobs:
                skipped.append("of a job that got another one")
                continue
            try:
                restore_select(job=attempt.job, restore_id=attempt.pk)
            except RestoreNotSelectable:
                skipped.append("had not succeeded")
                continue
            chosen_jobs.add(attempt.job_id)
            done += 1
        report(request, self, outcome_report("Selected", done, skipped, noun="restore"), done)


class RestoreAttemptInline(AttemptInlineBase):
    model = RestoreAttempt
    verbose_name_plural = "restore attempts"
    fields = (*INLINE_FIELDS, "result")
    readonly_fields = fields

    @admin.display(description="result")
    def result(self, obj: RestoreAttempt) -> SafeString | str:
        return thumbnail(obj.result_key)


class LatestRestoreStatusFilter(LatestAttemptStatusFilter):
    title = "latest restore"
    parameter_name = "latest_restore"
    annotation = "latest_restore_status"


@admin.display(description="latest restore", ordering="latest_restore_status")
def latest_restore_badge(job: Job) -> SafeString:
    return status_badge(getattr(job, "latest_restore_status", None) or "")


@admin.display(description="restores")
def restore_count(job: Job) -> int:
    return int(getattr(job, "restore_count", 0))


register_job_admin_part(
    JobAdminPart(
        inline=RestoreAttemptInline,
        annotations=lambda: {
            "latest_restore_status": latest_of(RestoreAttempt),
            "restore_count": count_of(RestoreAttempt),
        },
        columns=[latest_restore_badge, restore_count],
        filters=[LatestRestoreStatusFilter],
    )
)
