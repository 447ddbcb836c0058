from django.apps import AppConfig


class TestJobsConfig(AppConfig):
    name = "tests.jobs_app"
    label = "test_jobs"
    verbose_name = "Jobs of the tests"
