"""Input shapes of the restoration API (attempts are shown by ``jobs.serializers.RestoreAttemptSerializer``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


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
