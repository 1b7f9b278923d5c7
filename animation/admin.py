"""Animation attempt admin (the staff console builds on this)."""

from django.contrib import admin

from animation.models import AnimationAttempt


@admin.register(AnimationAttempt)
class AnimationAttemptAdmin(admin.ModelAdmin[AnimationAttempt]):
    list_display = ["id", "job", "status", "progress", "workflow", "hd_paid", "queued_at"]
    list_filter = ["status", "hd_paid"]
    list_select_related = ["job"]
    raw_id_fields = ["job", "restore"]
