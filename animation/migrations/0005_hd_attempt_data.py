"""Carry each animation's HD run (its ``hd_*`` columns) over to an HDAttempt row of its own, and back."""

from django.conf import settings
from django.db import migrations

# Old column (without the hd_ prefix) = new field.
RUN_FIELDS = (
    "status",
    "progress",
    "result_key",
    "engine",
    "node",
    "prompt_id",
    "tries",
    "tries_at_requeue",
    "lease_expires_at",
    "last_enqueued_at",
    "started_at",
    "finished_at",
    "notified_at",
    "error_type",
    "error_message",
    "error_details",
)
# The preview's parameters an HD run keeps (animation.services.HD_CARRIED_PARAMETERS when this was written).
CARRIED = ("prompt", "negative_prompt", "seed")


def forward(apps, schema_editor):
    AnimationAttempt = apps.get_model("animation", "AnimationAttempt")
    HDAttempt = apps.get_model("animation", "HDAttempt")
    batch = []
    for animation in AnimationAttempt.objects.exclude(hd_status="").iterator(chunk_size=500):
        values = {name: getattr(animation, f"hd_{name}") for name in RUN_FIELDS}
        batch.append(
            HDAttempt(
                job_id=animation.job_id,
                animation_id=animation.pk,
                workflow=settings.REKINDLE_WORKFLOW_ANIMATE_HD,
                parameters={k: v for k, v in (animation.parameters or {}).items() if k in CARRIED},
                queued_at=animation.hd_queued_at or animation.finished_at or animation.queued_at,
                **values,
            )
        )
        if len(batch) == 500:
            HDAttempt.objects.bulk_create(batch)
            batch = []
    HDAttempt.objects.bulk_create(batch)


def backward(apps, schema_editor):
    AnimationAttempt = apps.get_model("animation", "AnimationAttempt")
    HDAttempt = apps.get_model("animation", "HDAttempt")
    for hd in HDAttempt.objects.iterator(chunk_size=500):
        values = {f"hd_{name}": getattr(hd, name) for name in RUN_FIELDS}
        AnimationAttempt.objects.filter(pk=hd.animation_id).update(hd_queued_at=hd.queued_at, **values)
    # The hd_ columns hold the runs again; a later forward step makes the rows anew.
    HDAttempt.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("animation", "0004_hd_attempt"),
    ]

    operations = [migrations.RunPython(forward, backward)]
