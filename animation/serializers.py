"""Input shapes of the animation API (attempts are shown by ``jobs.serializers.AnimationAttemptSerializer``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


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
