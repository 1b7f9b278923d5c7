from django.apps import AppConfig
from django.db.models import Q


class AnimationConfig(AppConfig):
    name = "animation"
    verbose_name = "Animation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from animation.models import AnimationAttempt, HDAttempt
        from animation.services import animate_hd, animate_preview
        from animation.tasks import generate_hd_result, process_animation
        from jobs.kinds import AttemptKind, register_kind

        register_kind(
            AttemptKind(
                name="animate_preview",
                model=AnimationAttempt,
                actor=process_animation,
                work=animate_preview,
                noun="animation preview",
                action="animate this photo",
                label="animation",
                output_fields=("preview_key", "thumbnail_key"),
                job_field="animation_attempts",
                serializer="animation.serializers.AnimationAttemptSerializer",
                serializer_related=("hd",),
                admin_inline="animation.admin.AnimationAttemptInline",
                # What a person paid for is kept.
                keeps_job=Q(hd_paid=True),
            )
        )
        # Shown inside its animation, in the API and on the job's admin page.
        register_kind(
            AttemptKind(
                name="animate_hd",
                model=HDAttempt,
                actor=generate_hd_result,
                work=animate_hd,
                noun="HD video",
                action="make your HD video",
                label="HD",
                output_fields=("result_key",),
                parent_field="animation",
            )
        )
