from django.apps import AppConfig


class RestorationConfig(AppConfig):
    name = "restoration"
    verbose_name = "Restoration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.kinds import AttemptKind, register_kind
        from restoration.models import RestoreAttempt
        from restoration.services import restore, restore_attempt_create
        from restoration.tasks import process_restoration

        register_kind(
            AttemptKind(
                name="restore",
                model=RestoreAttempt,
                actor=process_restoration,
                work=restore,
                create=restore_attempt_create,
                noun="restored photo",
                action="restore this photo",
                label="restore",
                output_fields=("result_key",),
                job_field="restore_attempts",
                serializer="restoration.serializers.RestoreAttemptSerializer",
                admin_inline="restoration.admin.RestoreAttemptInline",
            )
        )
