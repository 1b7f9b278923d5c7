"""Input and output shapes of the jobs API.

Output serializers turn stored keys into URLs on the fly (``rekindle.storage.url_for``,
presigned on S3), reading the request from the serializer context to make local URLs
absolute. They only read what the selectors prefetched, so they never query.
"""

from __future__ import annotations

import copy
from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs.backpressure import queue_snapshot
from jobs.customer_errors import PUBLIC_CODES, customer_error
from jobs.kinds import attempt_kinds
from jobs.models import Attempt, AttemptStatus, Job
from rekindle import storage


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


# --- Input -------------------------------------------------------------------


def _printable(value: str) -> None:
    """No control characters: Django's address check lets some through in a quoted local part, and a
    line break or vertical tab in an address splits the ``To:`` header of every email to it."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise serializers.ValidationError("Enter a valid email address: no control characters.")


class JobUploadInputSerializer(serializers.Serializer[Any]):
    image = serializers.FileField(
        # An empty file is refused by the image checks (415), with the other non-images.
        allow_empty_file=True,
        help_text="The photo: JPEG, PNG, WebP, TIFF or BMP, decided by its content, not its name.",
    )
    email = serializers.EmailField(
        max_length=254,
        validators=[_printable],
        help_text="Where to send news about this job.",
    )
    restore = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Queue the first restore attempt at once, with the default parameters.",
    )


class JobClaimInputSerializer(serializers.Serializer[dict[str, str]]):
    token = serializers.CharField(
        required=False,
        trim_whitespace=True,
        help_text="The job's access token from the upload response (or send it in X-Job-Token).",
    )


# --- Output ------------------------------------------------------------------


# A model serializer's field classes and arguments are fixed once the apps are loaded.
_fields_built: dict[type[Any], dict[str, serializers.Field[Any, Any, Any, Any]]] = {}


class FieldsBuiltOnce(serializers.ModelSerializer[Any]):
    """Builds the fields of its class once per process and gives each instance copies.

    DRF's model serializers read the model's fields and build theirs anew for every instance,
    on every answer: about half the serializer's time in a job's answer. A copy (what DRF does
    with a plain serializer's declared fields) costs half of that. Each instance still gets fields
    of its own: they are bound to it (its context, its request).
    """

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        built = _fields_built.get(type(self))
        if built is None:
            built = _fields_built[type(self)] = super().get_fields()
        return copy.deepcopy(built)


# What went wrong with an attempt, in the customer's words (jobs.customer_errors).
class AttemptErrorSerializer(serializers.Serializer[Any]):
    """What went wrong, for the person: a stable code and a sentence to show them."""

    code = serializers.ChoiceField(
        choices=PUBLIC_CODES,
        help_text=(
            "`retrying` (a passing problem; it runs again), `service_unavailable`, `timed_out`, "
            "`input_unreadable`, `canceled` or `processing_failed`."
        ),
    )
    message = serializers.CharField(help_text="For people; may change.")


class AttemptQueueSerializer(serializers.Serializer[Any]):
    """Where a queued attempt stands, estimated from the pool's measured recent throughput."""

    position = serializers.IntegerField(help_text="1 for the next to start in its priority queue.")
    estimated_start = serializers.DateTimeField()
    estimated_finish = serializers.DateTimeField()


# The fields every kind of attempt shows; each app's serializer adds its outputs. Only what the
# person needs: the node that ran it, its prompt id and the engine's own error text are for staff
# (the admin and the logs).
class AttemptSerializer(FieldsBuiltOnce):
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    engine_label = serializers.CharField(
        read_only=True, help_text="The engine as people should see it; the local engine is for development only."
    )
    error = serializers.SerializerMethodField()
    waiting_for = serializers.CharField(
        read_only=True,
        help_text='"node" while the run waits for a processing node (every one busy, or none answering for a '
        "moment); empty otherwise. Such a wait spends none of the attempt's tries.",
    )

    queue = serializers.SerializerMethodField(
        help_text="On a queued attempt: its place in its queue and when it should start and finish; null otherwise."
    )

    @extend_schema_field(AttemptQueueSerializer(allow_null=True))
    def get_queue(self, attempt: Attempt) -> dict[str, Any] | None:
        if attempt.status != AttemptStatus.QUEUED:
            return None
        # One snapshot for the whole answer (the root serializer's context), never a query per attempt.
        context: dict[str, Any] = self.context  # type: ignore[assignment]  # the root's own dict
        snapshot = context.get("queue_snapshot")
        if snapshot is None:
            snapshot = context["queue_snapshot"] = queue_snapshot()
        estimate = snapshot.estimate(attempt)
        return None if estimate is None else AttemptQueueSerializer(estimate.as_dict()).data

    @extend_schema_field(AttemptErrorSerializer(allow_null=True))
    def get_error(self, attempt: Attempt) -> dict[str, str] | None:
        error = customer_error(attempt)
        return None if error is None else {"code": error.code, "message": error.message}


ATTEMPT_FIELDS = [
    "id",
    "status",
    "progress",
    "waiting_for",
    "queue",
    "workflow",
    "parameters",
    "engine",
    "engine_label",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "tries",
    "error",
]


def url_or_none(serializer: serializers.BaseSerializer[Any], key: str) -> str | None:
    """A URL for a stored key (presigned on S3), made absolute from the serializer's request; None for no key."""
    return storage.url_or_none(key, _request(serializer))


class JobSummarySerializer(FieldsBuiltOnce):
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
    """A job with every attempt of each kind that lists its own (``restore_attempts``, ...), oldest first."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        for kind in attempt_kinds():
            if kind.job_field:
                fields[kind.job_field] = kind.serializer_class()(many=True, read_only=True)
        return fields


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
