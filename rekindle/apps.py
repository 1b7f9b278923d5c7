from django.apps import AppConfig


class RekindleConfig(AppConfig):
    name = "rekindle"
    verbose_name = "Rekindle"

    def ready(self) -> None:
        # Registers the bearer-token scheme with drf-spectacular; it cannot be imported
        # from the authentication module, which DRF loads while its views are loading.
        import rekindle.auth.schema  # noqa: F401
        from rekindle import log_redaction

        log_redaction.install()
