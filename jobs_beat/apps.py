from django.apps import AppConfig


class JobsBeatConfig(AppConfig):
    name = "jobs_beat"
    verbose_name = "Periodic jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs_beat import checks  # noqa: F401  (registers the system checks)
