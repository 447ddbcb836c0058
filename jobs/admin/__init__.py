"""The admin for jobs: results, workers, queued and delayed messages, dead letters, and the
dashboard (``jobs/jobrecord/dashboard/``, linked from the admin index; its old address,
``jobs/jobresult/dashboard/``, redirects there).

Rows are written by workers and brokers, never edited by hand. What an operator may do to them
are actions, each behind a permission:

* job results: retry and revoke (change permission), delete (delete permission);
* workers: shut down (change permission on workers);
* queued messages: run a delayed job now and revoke (change permission), delete (delete
  permission; the job is recorded REVOKED, so nothing disappears silently);
* dead letters: requeue (change permission), delete;
* rate limits: the one table edited by hand (``ratelimits``): a job's limits changed at run
  time, told to the live workers as they are saved.

Job arguments and results are possibly sensitive: they show only on the pages of job results
and dead letters, to users who may view those. Every action is a POST through the admin, with
its CSRF protection.

One module per admin: ``results``, ``groups`` (groups and chords), ``messages``,
``deadletters`` and ``workers`` register theirs on import (Django imports this package when it
autodiscovers admins); ``readonly``
holds what they share; ``operations`` what their actions do to the rows; ``filters`` their
list filters; ``dashboard`` and ``stats`` the monitoring page. Display helpers that
``jobs_beat`` uses too live in :mod:`jobs.display`, which doesn't register anything.
"""

from __future__ import annotations

from django.contrib import admin

from jobs.admin.dashboard import moved_dashboard_urls
from jobs.admin.deadletters import DeadLetterAdmin
from jobs.admin.groups import GroupRecordAdmin
from jobs.admin.messages import MessageAdmin
from jobs.admin.ratelimits import RateLimitAdmin
from jobs.admin.results import JobRecordAdmin
from jobs.admin.workers import WorkerAdmin

__all__ = ["DeadLetterAdmin", "GroupRecordAdmin", "JobRecordAdmin", "MessageAdmin",
           "RateLimitAdmin", "WorkerAdmin"]

if admin.site.index_template is None:
    # The admin index gets a "Jobs monitoring" box linking the dashboard (for users who may
    # view job results). A project with its own index template can include
    # "admin/jobs/monitoring_links.html" in it.
    admin.site.index_template = "admin/jobs/index.html"


# The dashboard's address before the model was renamed JobRecord lies outside every model
# admin's URLs: the default site answers it with a redirect, as it shows the box above.
_site_get_urls = admin.site.get_urls
admin.site.get_urls = lambda: [*moved_dashboard_urls(admin.site), *_site_get_urls()]
