"""The model JobResult becomes JobRecord (``jobs.JobResult`` is the handle, Celery's AsyncResult).

Nothing changes in the database but names: the table keeps its name, set in ``Meta.db_table``
first, so the rename moves no table and the PostgreSQL triggers of 0002 stay on it. The model's
permissions get the new codenames (``view_jobresult`` becomes ``view_jobrecord``, and so on), so
that users and groups keep what they were granted. Their names ("Can view job result") come
from the verbose name, which stays.
"""

from django.db import migrations

ACTIONS = ("add", "change", "delete", "view")


def renaming_permissions(old: str, new: str):
    def rename(apps, schema_editor):
        try:
            permission_model = apps.get_model("auth", "Permission")
        except LookupError:  # without django.contrib.auth there is nothing to rename
            return
        permissions = permission_model.objects.using(schema_editor.connection.alias).filter(
            content_type__app_label="jobs")
        for action in ACTIONS:
            for permission in permissions.filter(codename=f"{action}_{old}"):
                existing = permissions.filter(codename=f"{action}_{new}").first()
                if existing is None:
                    permission.codename = f"{action}_{new}"
                    permission.save(update_fields=["codename"])
                else:
                    # Made under the new name already, by a post_migrate of this release sent
                    # before the migration ran (as ``flush`` sends it): it takes the grants.
                    hand_over(permission, existing)
                    permission.delete()

    return rename


def hand_over(old, new) -> None:
    for holders in ("user_set", "group_set"):
        if hasattr(old, holders):  # a custom user model may have no permissions of its own
            getattr(new, holders).add(*getattr(old, holders).all())


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0004_worker_database_outage"),
    ]

    operations = [
        migrations.AlterModelTable(name="jobresult", table="jobs_jobresult"),
        migrations.RenameModel(old_name="JobResult", new_name="JobRecord"),
        migrations.RunPython(renaming_permissions("jobresult", "jobrecord"),
                             renaming_permissions("jobrecord", "jobresult"), elidable=False),
    ]
