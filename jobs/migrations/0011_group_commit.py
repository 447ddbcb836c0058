"""Group commit of outcomes on PostgreSQL (other databases don't need these functions).

A worker's job writes its outcome without waiting for the disk (``jobs_result_deferred()``
in the statement's condition), and its worker makes the outcomes that came in together
durable with one commit that waits for the disk (``jobs_result_durable(ids)``): the log is
written in order, so that one flush covers every commit before it. Only then are the jobs'
messages acknowledged, and only then are callers waiting in ``get()`` notified, by that
same commit: the trigger of migration 0002 notifies at once for every other write of a final
state, and leaves the deferred ones to ``jobs_result_durable``.
"""

from django.db import migrations

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")

PAYLOAD_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_payload(id text, state text, result jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  payload text := json_build_object('id', id, 'state', state, 'result', result)::text;
BEGIN
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object('id', id)::text;
  END IF;
  RETURN payload;
END $$
"""

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('jobs.deferred', true) = 'on' THEN
    RETURN NULL;  -- notified by jobs_result_durable(), once on disk
  END IF;
  PERFORM pg_notify('jobs_result', jobs_result_payload(NEW.job_id, NEW.state, NEW.result));
  RETURN NULL;
END $$
"""

DEFERRED_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_deferred() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM set_config('jobs.deferred', 'on', true);
  RETURN true;
END $$
"""

DURABLE_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_durable(ids text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  -- A transaction id: this commit writes its record, and waits for the disk to hold it.
  PERFORM pg_current_xact_id();
  PERFORM pg_notify('jobs_result', jobs_result_payload(job_id, state, result))
    FROM {table} WHERE job_id = ANY(ids) AND state IN ({final});
END $$
"""

OLD_NOTIFY_FUNCTION = """
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


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("jobs", "JobRecord")._meta.db_table)
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    schema_editor.execute(PAYLOAD_FUNCTION)
    schema_editor.execute(NOTIFY_FUNCTION)
    schema_editor.execute(DEFERRED_FUNCTION)
    schema_editor.execute(DURABLE_FUNCTION.format(table=table, final=final))


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(OLD_NOTIFY_FUNCTION)
    schema_editor.execute("DROP FUNCTION IF EXISTS jobs_result_durable(text[])")
    schema_editor.execute("DROP FUNCTION IF EXISTS jobs_result_deferred()")
    schema_editor.execute("DROP FUNCTION IF EXISTS jobs_result_payload(text, text, jsonb)")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_rate_limits")]

    operations = [migrations.RunPython(create_functions, drop_functions, elidable=False)]
