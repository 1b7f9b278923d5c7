from django.apps import AppConfig


class AnimationConfig(AppConfig):
    name = "animation"
    verbose_name = "Animation"
    default_auto_field = "django.db.models.BigAutoField"
