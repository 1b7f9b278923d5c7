from django.apps import AppConfig


class RekindleConfig(AppConfig):
    name = "rekindle"
    verbose_name = "Rekindle"
