"""Migration 0005 renames the model JobResult to JobRecord: the table and its rows stay where they
are, and users and groups keep the permissions they were granted, on SQLite and on PostgreSQL.
Each test migrates the test database back to 0004 and forward again."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("jobs", "0004_worker_database_outage")
RENAME = ("jobs", "0005_rename_jobresult_jobrecord")

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]


def migrate(target: tuple[str, str]):
    """Migrate the jobs app to ``target``; returns the models as they are there."""
    return MigrationExecutor(connection).migrate([target]).apps


@pytest.fixture
def before_rename():
    """The database as 0004 left it (the models of then); back to the latest migrations after."""
    apps = migrate(BEFORE)
    yield apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def grant(apps, username: str, codename: str, *, group: bool = False) -> None:
    """Give user ``username`` the jobs permission ``codename``, or a group of theirs."""
    user = apps.get_model("auth", "User").objects.create(username=username)
    permission = apps.get_model("auth", "Permission").objects.get(
        content_type__app_label="jobs", codename=codename)
    if group:
        team = apps.get_model("auth", "Group").objects.create(name=f"{username}s")
        team.permissions.add(permission)
        user.groups.add(team)
    else:
        user.user_permissions.add(permission)


def triggers_on(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass "
                       "AND NOT tgisinternal", [table])
        return {name for (name,) in cursor.fetchall()}


def test_the_rename_keeps_the_table_and_its_rows(before_rename):
    before_rename.get_model("jobs", "JobResult").objects.create(job_id="kept", name="shop.add")

    renamed = migrate(RENAME).get_model("jobs", "JobRecord")  # the model as 0005 left it

    assert "jobs_jobresult" in connection.introspection.table_names()
    assert renamed.objects.get(job_id="kept").name == "shop.add"
    if connection.vendor == "postgresql":
        assert triggers_on("jobs_jobresult") == {"jobs_result_started", "jobs_result_notify"}


def test_users_keep_their_permissions_under_the_new_codenames(before_rename):
    grant(before_rename, "viewer", "view_jobresult")
    grant(before_rename, "operator", "change_jobresult", group=True)

    migrate(RENAME)

    viewer, operator = User.objects.get(username="viewer"), User.objects.get(username="operator")
    assert viewer.has_perm("jobs.view_jobrecord")
    assert not viewer.has_perm("jobs.view_jobresult")
    assert operator.has_perm("jobs.change_jobrecord")
    assert Group.objects.get(name="operators").permissions.get().codename == "change_jobrecord"


def test_migrating_back_gives_the_permissions_their_old_codenames(before_rename):
    grant(before_rename, "viewer", "view_jobresult")
    migrate(RENAME)

    migrate(BEFORE)

    viewer = User.objects.get(username="viewer")
    assert viewer.has_perm("jobs.view_jobresult")
    assert not viewer.has_perm("jobs.view_jobrecord")


def test_a_permission_already_under_the_new_codename_takes_over_the_grants(before_rename):
    # As a post_migrate of this release makes it when sent before the migration ran (flush).
    permissions = before_rename.get_model("auth", "Permission").objects
    old = permissions.get(content_type__app_label="jobs", codename="view_jobresult")
    permissions.create(content_type_id=old.content_type_id, codename="view_jobrecord",
                       name=old.name)
    grant(before_rename, "viewer", "view_jobresult")

    migrate(RENAME)

    assert User.objects.get(username="viewer").has_perm("jobs.view_jobrecord")
    codenames = permissions.filter(content_type__app_label="jobs").values_list("codename", flat=True)
    assert sorted(c for c in codenames if c.endswith(("_jobresult", "_jobrecord"))) == [
        "add_jobrecord", "change_jobrecord", "delete_jobrecord", "view_jobrecord"]
