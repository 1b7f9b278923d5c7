"""Restore attempt admin (the staff console builds on this)."""

from django.contrib import admin

from restoration.models import RestoreAttempt


@admin.register(RestoreAttempt)
class RestoreAttemptAdmin(admin.ModelAdmin[RestoreAttempt]):
    list_display = ["id", "job", "status", "progress", "workflow", "queued_at"]
    list_filter = ["status"]
    list_select_related = ["job"]
    raw_id_fields = ["job"]
