"""Input and output shapes of the animation API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from animation.models import AnimationAttempt
from jobs.customer_errors import customer_error
from jobs.models import AttemptStatus
from jobs.serializers import ATTEMPT_FIELDS, AttemptErrorSerializer, AttemptSerializer, url_or_none


class AnimateInputSerializer(serializers.Serializer[Any]):
    restore_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The succeeded restore attempt to animate; the job's selected restore when left out.",
    )
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "Values for the preview workflow's parameters (prompt, seed, seconds, fps, width, height); "
            "anything left out takes its default. The HD result later reuses them where it can."
        ),
    )


def _datetime(value: datetime | None) -> str | None:
    """A datetime written as the model fields beside it are."""
    return None if value is None else serializers.DateTimeField().to_representation(value)


class AnimationAttemptSerializer(AttemptSerializer):
    """An animation preview, with the state of its HD result in the `hd_` fields."""

    restore_id = serializers.UUIDField(read_only=True)
    preview_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    hd_status = serializers.SerializerMethodField(help_text="The HD result's run; empty until it is requested.")
    hd_progress = serializers.SerializerMethodField()
    hd_queued_at = serializers.SerializerMethodField()
    hd_started_at = serializers.SerializerMethodField()
    hd_finished_at = serializers.SerializerMethodField()
    hd_result_url = serializers.SerializerMethodField(help_text="Only once the HD result is paid for and ready.")
    hd_error = serializers.SerializerMethodField()

    class Meta:
        model = AnimationAttempt
        fields = [
            *ATTEMPT_FIELDS,
            "restore_id",
            "preview_url",
            "thumbnail_url",
            "hd_paid",
            "hd_status",
            "hd_progress",
            "hd_queued_at",
            "hd_started_at",
            "hd_finished_at",
            "hd_result_url",
            "hd_error",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_preview_url(self, attempt: AnimationAttempt) -> str | None:
        return url_or_none(self, attempt.preview_key)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, attempt: AnimationAttempt) -> str | None:
        return url_or_none(self, attempt.thumbnail_key)

    # The schema allows the empty status every animation has until its HD result is requested.
    @extend_schema_field(serializers.ChoiceField(choices=AttemptStatus.choices, allow_blank=True))
    def get_hd_status(self, attempt: AnimationAttempt) -> str:
        hd = attempt.hd_attempt
        return hd.status if hd is not None else ""

    @extend_schema_field(serializers.IntegerField(min_value=0, max_value=100))
    def get_hd_progress(self, attempt: AnimationAttempt) -> int:
        hd = attempt.hd_attempt
        return hd.progress if hd is not None else 0

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_hd_queued_at(self, attempt: AnimationAttempt) -> str | None:
        hd = attempt.hd_attempt
        return _datetime(hd.queued_at if hd is not None else None)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_hd_started_at(self, attempt: AnimationAttempt) -> str | None:
        hd = attempt.hd_attempt
        return _datetime(hd.started_at if hd is not None else None)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_hd_finished_at(self, attempt: AnimationAttempt) -> str | None:
        hd = attempt.hd_attempt
        return _datetime(hd.finished_at if hd is not None else None)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_hd_result_url(self, attempt: AnimationAttempt) -> str | None:
        hd = attempt.hd_attempt
        if not attempt.hd_paid or hd is None:
            return None
        return url_or_none(self, hd.result_key)

    @extend_schema_field(AttemptErrorSerializer(allow_null=True))
    def get_hd_error(self, attempt: AnimationAttempt) -> dict[str, str] | None:
        hd = attempt.hd_attempt
        error = customer_error(hd) if hd is not None else None
        return None if error is None else {"code": error.code, "message": error.message}
