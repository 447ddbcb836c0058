"""The worker's notification that a job is done leaves the transaction that records it.

PostgreSQL serialises the commits of transactions that NOTIFY: each holds a lock from its
NOTIFY until its commit is on disk, so two workers recording outcomes at once flushed the
write-ahead log one after the other instead of together. The trigger of migration 0002
still notifies for every other writer; a statement that sets ``jobs.notify`` to
``after-commit`` for its own transaction (the worker's final-state write, outside any
transaction of the caller's) is left alone, and its writer sends the same notification in
a transaction of its own once the outcome is durable (``jobs.lifecycle``).
"""

from django.db import migrations

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  payload text;
BEGIN
  IF current_setting('jobs.notify', true) = 'after-commit' THEN
    RETURN NULL;
  END IF;
  payload := json_build_object('id', NEW.job_id, 'state', NEW.state, 'result', NEW.result)::text;
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object('id', NEW.job_id)::text;
  END IF;
  PERFORM pg_notify('jobs_result', payload);
  RETURN NULL;
END $$
"""

PREVIOUS_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  payload text := json_build_object('id', NEW.job_id, 'state', NEW.state,
                                    'result', NEW.result)::text;
BEGIN
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object('id', NEW.job_id)::text;
  END IF;
  PERFORM pg_notify('jobs_result', payload);
  RETURN NULL;
END $$
"""


def replace(function: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(function)
    return run


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_rate_limits")]

    operations = [migrations.RunPython(replace(NOTIFY_FUNCTION), replace(PREVIOUS_FUNCTION),
                                       elidable=False)]
