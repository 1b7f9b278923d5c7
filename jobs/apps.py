from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.metrics import AttemptsInFlightCollector
        from rekindle.ops import register_scrape_collector

        # The queue's depth on /metrics, counted at each scrape.
        register_scrape_collector(AttemptsInFlightCollector())
