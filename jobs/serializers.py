"""Input and output shapes of the jobs API.

Output serializers turn stored keys into URLs on the fly (``rekindle.storage.url_for``,
presigned on S3), reading the request from the serializer context to make local URLs
absolute. They only read what the selectors prefetched, so they never query.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from animation.models import AnimationAttempt
from jobs.models import Attempt, AttemptStatus, Job
from rekindle import storage
from restoration.models import RestoreAttempt


def _request(serializer: serializers.BaseSerializer[Any]) -> HttpRequest | None:
    request = serializer.context.get("request")
    return request if request is not None else None


# --- Errors (documentation of the one error shape) --------------------------


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable, machine-readable, e.g. `image_too_large`.")
    message = serializers.CharField(help_text="For people; may change.")
    details = serializers.DictField(help_text="Extra facts, e.g. `fields` for validation errors.")


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error the API returns: ``{"error": {"code", "message", "details"}}``."""

    error = ErrorBodySerializer()


class AttemptErrorSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()


# --- Input -------------------------------------------------------------------


class JobUploadInputSerializer(serializers.Serializer[Any]):
    image = serializers.FileField(
        # An empty file is refused by the image checks (415), with the other non-images.
        allow_empty_file=True,
        help_text="The photo: JPEG, PNG, WebP, TIFF or BMP, decided by its content, not its name.",
    )
    email = serializers.EmailField(max_length=254, help_text="Where to send news about this job.")
    restore = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Queue the first restore attempt at once, with the default parameters.",
    )


# --- Output ------------------------------------------------------------------


def _error_of(attempt: Attempt) -> dict[str, str] | None:
    if not attempt.error_type and not attempt.error_message:
        return None
    return {"code": attempt.error_type or "error", "message": attempt.error_message}


class _AttemptSerializer(serializers.ModelSerializer[Any]):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    engine_label = serializers.CharField(
        read_only=True, help_text="The engine as people should see it; the local engine is for development only."
    )
    error = serializers.SerializerMethodField()

    @extend_schema_field(AttemptErrorSerializer(allow_null=True))
    def get_error(self, attempt: Attempt) -> dict[str, str] | None:
        return _error_of(attempt)


_ATTEMPT_FIELDS = [
    "id",
    "status",
    "progress",
    "workflow",
    "parameters",
    "engine",
    "engine_label",
    "node",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "tries",
    "error",
]


class RestoreAttemptSerializer(_AttemptSerializer):
    result_url = serializers.SerializerMethodField(help_text="The restored image; null until it succeeds.")

    class Meta:
        model = RestoreAttempt
        fields = [*_ATTEMPT_FIELDS, "result_url"]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_result_url(self, attempt: RestoreAttempt) -> str | None:
        return storage.url_or_none(attempt.result_key, _request(self))


class AnimationAttemptSerializer(_AttemptSerializer):
    restore_id = serializers.UUIDField(read_only=True)
    # Declared here because DRF drops ``allow_blank`` from read-only model fields, and the schema would
    # then deny the empty status every attempt has until its HD result is requested.
    hd_status = serializers.ChoiceField(
        choices=AttemptStatus.choices,
        allow_blank=True,
        read_only=True,
        help_text="The HD result's run; empty until it is requested.",
    )
    preview_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    hd_result_url = serializers.SerializerMethodField(help_text="Only once the HD result is paid for and ready.")
    hd_error = serializers.SerializerMethodField()

    class Meta:
        model = AnimationAttempt
        fields = [
            *_ATTEMPT_FIELDS,
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
        return storage.url_or_none(attempt.preview_key, _request(self))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, attempt: AnimationAttempt) -> str | None:
        return storage.url_or_none(attempt.thumbnail_key, _request(self))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_hd_result_url(self, attempt: AnimationAttempt) -> str | None:
        if not attempt.hd_paid:
            return None
        return storage.url_or_none(attempt.hd_result_key, _request(self))

    @extend_schema_field(AttemptErrorSerializer(allow_null=True))
    def get_hd_error(self, attempt: AnimationAttempt) -> dict[str, str] | None:
        if not attempt.hd_error_type and not attempt.hd_error_message:
            return None
        return {"code": attempt.hd_error_type or "error", "message": attempt.hd_error_message}


class JobSummarySerializer(serializers.ModelSerializer[Any]):
    """A job in a list: no attempts."""

    original_url = serializers.SerializerMethodField()
    selected_restore = serializers.UUIDField(source="selected_restore_id", read_only=True, allow_null=True)
    latest_animation = serializers.UUIDField(source="latest_animation_id", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "email",
            "created_at",
            "updated_at",
            "original_url",
            "original_format",
            "original_width",
            "original_height",
            "original_bytes",
            "original_sha256",
            "selected_restore",
            "latest_animation",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField())
    def get_original_url(self, job: Job) -> str:
        return storage.url_for(job.original_key, _request(self))


class JobSerializer(JobSummarySerializer):
    """A job with every attempt, oldest first."""

    restore_attempts = RestoreAttemptSerializer(many=True, read_only=True)
    animation_attempts = AnimationAttemptSerializer(many=True, read_only=True)

    class Meta(JobSummarySerializer.Meta):
        fields = [*JobSummarySerializer.Meta.fields, "restore_attempts", "animation_attempts"]
        read_only_fields = fields


class JobCreatedSerializer(JobSerializer):
    token = serializers.SerializerMethodField(
        help_text="The job's access token, shown only here: send it as `X-Job-Token` or `?token=`."
    )

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, job: Job) -> str:
        token: str = self.context["token"]
        return token
