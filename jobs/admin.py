"""Job admin (the staff console builds on this)."""

from django.contrib import admin

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    list_display = ["id", "email", "created_at", "original_width", "original_height"]
    search_fields = ["id", "email"]
    readonly_fields = [f.name for f in Job._meta.get_fields() if getattr(f, "concrete", False)]
