"""MkDocs hooks: the pages generated from the code when the site is built.

- ``reference/settings.md``: every key of ``jobs.conf.DEFAULTS`` with its default and its
  description from ``jobs.conf.DESCRIPTIONS``, so the reference can't drift from the code.
- ``reference/commands.md``: the ``--help`` of every management command of ``jobs`` and
  ``jobs_beat``, as ``manage.py <command> --help`` prints it.
- ``benchmarks.md`` and ``changelog.md``: BENCHMARKS.md and CHANGELOG.md of the checkout as
  they are, their links to docs/ made relative to the site.

Nothing generated is committed: the pages exist only in the built site (``mkdocs build``,
``mkdocs serve``).
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

#: The checkout's top directory: the files the site includes are there.
ROOT = Path(__file__).resolve().parent.parent
#: Files of the checkout that are pages of the site: file -> page.
INCLUDED = {"BENCHMARKS.md": "benchmarks.md", "CHANGELOG.md": "changelog.md"}
#: The apps whose management commands are documented, in this order.
COMMAND_APPS = ("jobs", "jobs_beat")
#: Sphinx cross-reference roles in docstrings (":class:`JobResult`"): the role is dropped from
#: the API reference, leaving the name in code.
SPHINX_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj):(?=<code>)")
#: The width the commands' help is wrapped at, whatever the terminal building the site.
HELP_COLUMNS = 88


def on_files(files, config):
    files.append(File.generated(config, "reference/settings.md", content=settings_page()))
    files.append(File.generated(config, "reference/commands.md", content=commands_page()))
    for name, page in INCLUDED.items():
        files.append(File.generated(config, page, content=included_page(name)))
    return files


def on_page_content(html, page, config, files):
    return SPHINX_ROLE.sub("", html)


def on_serve(server, config, builder):
    """``mkdocs serve`` rebuilds when an included file changes (code changes need a restart:
    the modules read for the reference stay imported)."""
    for name in INCLUDED:
        server.watch(str(ROOT / name))
    return server


def included_page(name: str) -> str:
    """A file of the checkout as a page: written for the top of the checkout, it links to
    ``docs/x.md`` and ``BENCHMARKS.md``; on the site those are ``x.md`` and ``benchmarks.md``."""
    text = (ROOT / name).read_text()
    text = text.replace("](docs/", "](")
    for included, page in INCLUDED.items():
        text = text.replace(f"]({included}", f"]({page}")
    return text


# The settings reference ---------------------------------------------------------------------


def settings_page() -> str:
    from jobs.conf import ALIASES, DEFAULT_MIDDLEWARE, DEFAULTS, DESCRIPTIONS

    lines = [
        "# Settings",
        "",
        "Every setting is a key of one dict, `JOBS`, in your Django settings; each key left out "
        "has the default below. `manage.py check` checks them: an unknown key or a bad value is "
        "an error with an id `jobs.E0xx`. The names are Celery's without the `CELERY_` prefix "
        "([what differs](../migrating-from-celery.md#settings)).",
        "",
        "```python",
        "JOBS = {",
        '    "BROKER_URL": "redis://127.0.0.1:6379/0",',
        '    "TASK_ROUTES": {"billing.jobs.*": "billing"},',
        "}",
        "```",
        "",
    ]
    undescribed = [key for key in DEFAULTS if key not in DESCRIPTIONS]
    if undescribed:
        raise PluginError(f"JOBS keys without a description in jobs.conf.DESCRIPTIONS: "
                          f"{', '.join(undescribed)}")
    aliases = {key: alias for alias, key in ALIASES.items()}
    for key, default in DEFAULTS.items():
        lines += [f"## `{key}`", "", f"Default: `{default_text(default)}`", ""]
        if key in aliases:
            lines += [f"Also accepted as `{aliases[key]}`.", ""]
        lines += [relative_links(DESCRIPTIONS[key]), ""]
        if key == "MIDDLEWARE":
            lines += ["The default list, `jobs.conf.DEFAULT_MIDDLEWARE`:", "", "```python",
                      "[", *(f'    "{path}",' for path in DEFAULT_MIDDLEWARE), "]", "```", ""]
    lines += [
        "## `JOBS_BEAT_SCHEDULE`",
        "",
        "A top-level Django setting, not a key of `JOBS`: the periodic jobs declared in "
        "settings, in Celery's `beat_schedule` form. See [Periodic jobs](../periodic.md).",
        "",
    ]
    return "\n".join(lines)


def default_text(value) -> str:
    """A default as it would be written in settings.py (with the docs' double quotes)."""
    if isinstance(value, timedelta):
        return f"timedelta({timedelta_arguments(value)})"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{default_text(k)}: {default_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(default_text, value)) + "]"
    return repr(value)


def timedelta_arguments(value: timedelta) -> str:
    if value.seconds == 0 and value.microseconds == 0:
        return f"days={value.days}"
    return f"seconds={value.total_seconds():g}"


def relative_links(text: str) -> str:
    """Descriptions link to pages as seen from the docs' root; this page is one level down."""
    return text.replace("](", "](../").replace("](../http", "](http")


# The management commands ---------------------------------------------------------------------


def commands_page() -> str:
    lines = [
        "# Management commands",
        "",
        "Each command's `--help`, as `python manage.py <command> --help` prints it.",
        "",
    ]
    for app, name, parser in command_parsers():
        lines += [f"## `{name}`", "", f"From the `{app}` app.", "", "```text",
                  parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def command_parsers():
    """(app label, command name, argument parser) of each command of :data:`COMMAND_APPS`."""
    from django.apps import apps
    from django.core.management import find_commands, load_command_class

    setup_django()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)
    try:
        for app in COMMAND_APPS:
            path = Path(apps.get_app_config(app).path) / "management"
            for name in sorted(find_commands(str(path))):
                command = load_command_class(app, name)
                yield app, name, command.create_parser("manage.py", name)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def setup_django() -> None:
    """The least configuration the commands' modules import under: the two apps, no database
    connection is ever opened."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                            "jobs", "jobs_beat"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            USE_TZ=True,
        )
        django.setup()
