"""A job's two writes on PostgreSQL, as functions: ``jobs_record_start`` and
``jobs_record_outcome`` (other databases don't need them).

They do what :mod:`jobs.lifecycle` otherwise sends as two statements, which PostgreSQL would
parse and plan again for every job: Django leaves psycopg's prepared statements off, as
PgBouncer's transaction pooling needs. A PL/pgSQL function plans its statements once per
connection and keeps the plans, pooler or not: a third of the database's work per job.

- ``jobs_record_start``: the STARTED row; if the job has one, count a redelivery of the same
  attempt (or start afresh for a retry), unless it was revoked or a later attempt owns it.
  Returns the attempt's deliveries, or NULL when it must not run.
- ``jobs_record_outcome``: a final state (SUCCESS, FAILURE), unless a later attempt owns the
  row; its parameters are those of the ``UPDATE`` it stands for, in their order. Returns the
  rows written (0: no row, or a later attempt's).

The triggers of migration 0002 apply to their writes as to any other.
"""

from django.db import migrations

START_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_record_start(
  p_job_id text, p_name text, p_args jsonb, p_kwargs jsonb, p_queue text, p_parent_id text,
  p_root_id text, p_group_id text, p_worker text, p_started timestamptz, p_retries integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  starts integer;
BEGIN
  INSERT INTO {table} AS r (job_id, name, args, kwargs, queue, parent_id, root_id, group_id,
      state, worker, date_started, retries, date_done, deliveries, date_created, result,
      traceback, meta, runtime)
    VALUES (p_job_id, p_name, p_args, p_kwargs, p_queue, p_parent_id, p_root_id, p_group_id,
      'STARTED', p_worker, p_started, p_retries, NULL, 1, p_started, NULL, '', NULL, NULL)
    ON CONFLICT (job_id) DO UPDATE SET
      deliveries = CASE WHEN r.retries = excluded.retries THEN r.deliveries + 1 ELSE 1 END,
      state = excluded.state, worker = excluded.worker, date_started = excluded.date_started,
      retries = excluded.retries, date_done = excluded.date_done
    WHERE r.retries <= excluded.retries AND r.state <> 'REVOKED'
    RETURNING r.deliveries INTO starts;
  RETURN starts;
END $$
"""

OUTCOME_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_record_outcome(
  p_state text, p_result jsonb, p_traceback text, p_done timestamptz,
  p_runtime double precision, p_worker text, p_retries integer, p_job_id text,
  p_attempt integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  written integer;
BEGIN
  UPDATE {table} SET state = p_state, result = p_result, traceback = p_traceback,
      date_done = p_done, runtime = p_runtime, worker = p_worker, retries = p_retries
    WHERE job_id = p_job_id AND retries <= p_attempt;
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END $$
"""

SIGNATURES = (
    "jobs_record_start(text, text, jsonb, jsonb, text, text, text, text, text, timestamptz, "
    "integer)",
    "jobs_record_outcome(text, jsonb, text, timestamptz, double precision, text, integer, text, "
    "integer)",
)


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("jobs", "JobRecord")._meta.db_table)
    schema_editor.execute(START_FUNCTION.replace("{table}", table))
    schema_editor.execute(OUTCOME_FUNCTION.replace("{table}", table))


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for signature in SIGNATURES:
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {signature}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_rate_limits")]

    operations = [migrations.RunPython(create_functions, drop_functions, elidable=False)]
