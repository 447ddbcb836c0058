"""A Django task only the test process imports: workers don't know it."""

from jobs.compat.tasks import task


@task
def nobody_knows_me():
    return "never runs"
