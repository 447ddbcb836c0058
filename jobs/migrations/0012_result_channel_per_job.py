"""PostgreSQL: a job's final state is notified on a channel of its own.

The trigger of migration 0002 notified every final state on one channel, ``jobs_result``, so
every caller waiting in ``JobResult.get()`` received every job's notification. Now the
channel is the job's (``jobs_result_`` and the MD5 of its id, in hex:
:func:`jobs.results.result_channel`): a waiting connection receives only the job it waits
for, and ``get()`` listens and reads the job's state in one round trip.
"""

from django.db import migrations

#: A job's channel: what jobs.results.result_channel computes in Python.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  payload text := json_build_object('id', NEW.job_id, 'state', NEW.state,
                                    'result', NEW.result)::text;
BEGIN
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object('id', NEW.job_id)::text;
  END IF;
  PERFORM pg_notify('jobs_result_' || md5(NEW.job_id), payload);
  RETURN NULL;
END $$
"""


def per_job(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NOTIFY_FUNCTION)


def shared(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        from importlib import import_module

        schema_editor.execute(
            import_module("jobs.migrations.0002_postgresql_triggers").NOTIFY_FUNCTION)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0011_postgresql_job_writes")]

    operations = [migrations.RunPython(per_job, shared, elidable=False)]
