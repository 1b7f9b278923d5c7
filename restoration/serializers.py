"""Input and output shapes of the restoration API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs.serializers import ATTEMPT_FIELDS, AttemptSerializer, url_or_none
from restoration.models import RestoreAttempt


class RestoreInputSerializer(serializers.Serializer[Any]):
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "Values for the restore workflow's parameters (prompt, seed, steps, guidance, denoise, megapixels); "
            "anything left out takes its default. Checked against the workflow's allowed ranges."
        ),
    )


class SelectRestoreInputSerializer(serializers.Serializer[Any]):
    restore_id = serializers.UUIDField(help_text="A succeeded restore attempt of this job.")


class RestoreAttemptSerializer(AttemptSerializer):
    result_url = serializers.SerializerMethodField(help_text="The restored image; null until it succeeds.")

    class Meta:
        model = RestoreAttempt
        fields = [*ATTEMPT_FIELDS, "result_url"]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_result_url(self, attempt: RestoreAttempt) -> str | None:
        return url_or_none(self, attempt.result_key)
