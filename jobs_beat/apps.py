from django.apps import AppConfig


class JobsBeatConfig(AppConfig):
    name = "jobs_beat"
    verbose_name = "Periodic jobs"
    default_auto_field = "django.db.models.BigAutoField"
