"""A job's two writes on PostgreSQL, as functions: ``jobs_record_start`` and
``jobs_record_outcome`` (other databases don't need them).

They do what :mod:`jobs.lifecycle` otherwise sends as two statements, which PostgreSQL would
parse and plan again for every job: Django leaves psycopg's prepared statements off, as
PgBouncer's transaction pooling needs. A PL/pgSQL function plans its statements once per
connection and keeps the plans, pooler or not: a third of the database's work per job.

Each takes the parameters of the statement it stands for, by name (``jobs.lifecycle`` calls
them with the statement's parameters), and answers with a row where the statement would:

- ``jobs_record_start``: the STARTED row, a column per parameter; if the job has one, count
  a redelivery of the same attempt (or start afresh for a retry), unless it was revoked or a
  later attempt owns it. Returns the attempt's deliveries, or NULL when it must not run.
- ``jobs_record_outcome``: a final state (SUCCESS, FAILURE), unless a later attempt owns the
  row (``retries`` above ``attempt``). Returns the rows written (0: no row, or a later
  attempt's).

Inside, the parameters are read by position (``$1``), and a name is a column's
(``#variable_conflict use_column``): their names are the columns'. The
triggers of migration 0002 apply to their writes as to any other.
"""

from django.db import migrations

START_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_record_start(
  job_id text, name text, args jsonb, kwargs jsonb, queue text, parent_id text, root_id text,
  group_id text, state text, worker text, date_started timestamptz, retries bigint,
  date_done timestamptz, deliveries bigint, date_created timestamptz, result jsonb,
  traceback text, meta jsonb, runtime double precision)
RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  starts integer;
BEGIN
  INSERT INTO {table} AS r (job_id, name, args, kwargs, queue, parent_id, root_id, group_id,
      state, worker, date_started, retries, date_done, deliveries, date_created, result,
      traceback, meta, runtime)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
      $19)
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
  state text, result jsonb, traceback text, date_done timestamptz, runtime double precision,
  worker text, retries bigint, job_id text, attempt bigint)
RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  written integer;
BEGIN
  UPDATE {table} AS r SET state = $1, result = $2, traceback = $3, date_done = $4,
      runtime = $5, worker = $6, retries = $7
    WHERE r.job_id = $8 AND r.retries <= $9;
  GET DIAGNOSTICS written = ROW_COUNT;
  RETURN written;
END $$
"""

SIGNATURES = (
    "jobs_record_start(text, text, jsonb, jsonb, text, text, text, text, text, text, "
    "timestamptz, bigint, timestamptz, bigint, timestamptz, jsonb, text, jsonb, "
    "double precision)",
    "jobs_record_outcome(text, jsonb, text, timestamptz, double precision, text, bigint, text, "
    "bigint)",
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
