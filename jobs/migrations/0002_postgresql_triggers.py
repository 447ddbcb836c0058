"""Two triggers on PostgreSQL's JobResult table (other databases don't need them).

``jobs_result_started``: the STARTED mark is committed without waiting for the disk. If the
database crashed in the next moments the mark could be lost, which costs nothing (the job's
message is still unacknowledged); waiting for the flush would double the database time of a
short job. The trigger sets ``synchronous_commit`` for its own transaction only, so final
states, after which the message is acknowledged, are committed durably.

``jobs_result_notify``: whenever a job reaches a final state, NOTIFY ``jobs_result`` with a
JSON payload (the job id, state and result; only the id when that would pass NOTIFY's
8,000-byte limit), so that ``JobResult.get()`` wakes the moment the state is committed.
"""

from django.db import migrations

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")

STARTED_FUNCTION = """
CREATE OR REPLACE FUNCTION jobs_result_started() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  RETURN NEW;
END $$
"""

NOTIFY_FUNCTION = """
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


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("jobs", "JobResult")._meta.db_table)
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    schema_editor.execute(STARTED_FUNCTION)
    schema_editor.execute(
        f"CREATE TRIGGER jobs_result_started BEFORE INSERT OR UPDATE OF state ON {table} "
        f"FOR EACH ROW WHEN (NEW.state = 'STARTED') EXECUTE FUNCTION jobs_result_started()"
    )
    schema_editor.execute(NOTIFY_FUNCTION)
    schema_editor.execute(
        f"CREATE TRIGGER jobs_result_notify AFTER INSERT OR UPDATE OF state ON {table} "
        f"FOR EACH ROW WHEN (NEW.state IN ({final})) EXECUTE FUNCTION jobs_result_notify()"
    )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("jobs", "JobResult")._meta.db_table)
    for name in ("jobs_result_started", "jobs_result_notify"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {name}()")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [migrations.RunPython(create_triggers, drop_triggers, elidable=False)]
