"""The admin both attempt lists share: columns, filters, search, read-only detail, requeue/cancel/email actions.

``restoration.admin`` and ``animation.admin`` subclass :class:`AttemptAdmin` and add
their outputs and their own actions. Every action goes through the service the API
and the workers use (``jobs.attempts``, ``jobs.notifications``), one attempt at a
time, and says what it did and what it skipped and why.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.admin_display import (
    duration_text,
    error_full,
    error_summary,
    outcome_report,
    pretty_json,
    progress_bar,
    short_id,
    status_badge,
)
from jobs.attempts import attempt_cancel, attempt_requeue
from jobs.models import Attempt
from jobs.notifications import FINISHED, job_ready_email_queue

AttemptT = TypeVar("AttemptT", bound=Attempt)

ADMIN_CSS = {"all": ["rekindle/admin.css"]}


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With an error"), ("no", "Without")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(error_type="", error_message="")
        if self.value() == "no":
            return queryset.filter(error_type="", error_message="")
        return queryset


def report(request: HttpRequest, model_admin: admin.ModelAdmin[Any], text: str, done: int) -> None:
    model_admin.message_user(request, text, messages.SUCCESS if done else messages.WARNING)


LIST_DISPLAY: tuple[str, ...] = (
    "short",
    "job_link",
    "status_badge",
    "progress_bar",
    "workflow",
    "duration",
    "node",
    "error",
    "queued_at",
)
ACTIONS: tuple[str, ...] = ("requeue_attempts", "cancel_attempts", "resend_ready_email")
# The detail page's run facts; subclasses show them in a fieldset of their own.
RUN_FIELDS = [
    "engine_label",
    "node",
    "prompt_id",
    "tries",
    "lease_expires_at",
    "queued_at",
    "last_enqueued_at",
    "started_at",
    "finished_at",
    "duration",
    "notified_at",
]


class AttemptAdmin(admin.ModelAdmin[AttemptT]):
    """Read-only attempt pages; the state changes only through the actions."""

    list_display = LIST_DISPLAY
    list_display_links = ["short"]
    list_filter = ["status", HasErrorFilter, "workflow", "engine", "queued_at"]
    list_select_related = ["job"]
    date_hierarchy = "queued_at"
    search_fields = ["job__email"]
    search_help_text = "Email (or part of it), an attempt or job id, or the first characters of an attempt id."
    list_per_page = 50
    show_full_result_count = False
    ordering = ["-queued_at"]
    actions = ACTIONS
    change_form_template = "admin/rekindle/attempt_change_form.html"

    class Media:
        css = ADMIN_CSS

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AttemptT], search_term: str
    ) -> tuple[QuerySet[AttemptT], bool]:
        from jobs.admin import attempt_search

        return attempt_search(queryset, search_term, job_field="job"), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An attempt is a record of what happened; it goes away with its job.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Everything the page shows is read-only.
        names: list[str] = []
        for _, options in self.get_fieldsets(request, obj):
            for name in options["fields"]:
                names.extend([name] if isinstance(name, str) else name)
        return names

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The list's actions also act on this one attempt from its own page.
        object_actions = [
            (name, action[2])
            for name, action in self.get_actions(request).items()
            if action is not None and name != "delete_selected"
        ]
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "object_actions": object_actions,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[AttemptT], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        response = super().response_action(request, queryset, *args, **kwargs)
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if response is not None and request.POST.get("_from_change_page") and len(selected) == 1:
            # Back to the attempt's page, where its new state and the report show.
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[selected[0]]))
        return response

    # --- columns --------------------------------------------------------------

    @admin.display(description="attempt", ordering="id")
    def short(self, obj: AttemptT) -> str:
        return short_id(obj.pk)

    @admin.display(description="job", ordering="job__created_at")
    def job_link(self, obj: AttemptT) -> SafeString:
        job = obj.job
        url = reverse("admin:jobs_job_change", args=[job.pk])
        return format_html(
            '<a href="{}" title="{}">{}</a><br><small>{}</small>', url, job.pk, short_id(job.pk), job.email
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: AttemptT) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, obj: AttemptT) -> SafeString:
        return progress_bar(obj.progress, obj.status)

    @admin.display(description="duration")
    def duration(self, obj: AttemptT) -> str:
        return duration_text(obj.started_at, obj.finished_at)

    @admin.display(description="error", ordering="error_type")
    def error(self, obj: AttemptT) -> SafeString | str:
        return error_summary(obj.error_type, obj.error_message)

    @admin.display(description="error")
    def error_detail(self, obj: AttemptT) -> SafeString | str:
        return error_full(obj.error_type, obj.error_message, obj.error_details)

    @admin.display(description="parameters")
    def parameters_json(self, obj: AttemptT) -> SafeString:
        return pretty_json(obj.parameters)

    # --- actions ----------------------------------------------------------------

    def email_attempt(self, attempt: AttemptT) -> Attempt:
        """The attempt whose ready email "resend" sends: its own (an animation's may be its HD result's)."""
        return attempt

    def requeue_one(self, attempt: AttemptT) -> bool:
        return attempt_requeue(attempt)

    def cancel_one(self, attempt: AttemptT) -> bool:
        return attempt_cancel(attempt)

    @admin.action(description="Requeue failed, canceled or stuck attempts", permissions=["change"])
    def requeue_attempts(self, request: HttpRequest, queryset: QuerySet[AttemptT]) -> None:
        done, skipped = 0, []
        for attempt in queryset.order_by("queued_at"):
            if self.requeue_one(attempt):
                done += 1
            else:
                skipped.append(self._current_status(attempt))
        report(request, self, outcome_report("Requeued", done, skipped), done)

    @admin.action(description="Cancel queued or running attempts (interrupts the node)", permissions=["change"])
    def cancel_attempts(self, request: HttpRequest, queryset: QuerySet[AttemptT]) -> None:
        done, skipped = 0, []
        for attempt in queryset.order_by("queued_at"):
            if self.cancel_one(attempt):
                done += 1
            else:
                skipped.append(self._current_status(attempt))
        report(request, self, outcome_report("Canceled", done, skipped), done)

    @admin.action(description="Resend the ready email", permissions=["change"])
    def resend_ready_email(self, request: HttpRequest, queryset: QuerySet[AttemptT]) -> None:
        done, skipped = 0, []
        for attempt in queryset.select_related("job").order_by("queued_at"):
            emailed = self.email_attempt(attempt)
            if emailed.status in FINISHED:
                # Sent by a worker (jobs.tasks.send_ready_email): a hung mail server cannot hold this page.
                job_ready_email_queue(attempt=emailed, force=True)
                done += 1
            else:
                skipped.append("not finished yet")
        report(request, self, outcome_report("Queued for a worker to send:", done, skipped, noun="ready email"), done)

    def _current_status(self, attempt: AttemptT) -> str:
        status = type(attempt)._default_manager.filter(pk=attempt.pk).values_list("status", flat=True).first()
        return str(status or "that was deleted meanwhile")
