"""The parts keep to their places: core never needs the worker, jobs_beat or the project."""

from __future__ import annotations

import ast
from pathlib import Path

import jobs

CORE = Path(jobs.__file__).parent
# Where importing the worker is the point: the worker itself, its command, the test harness.
MAY_IMPORT_WORKER = {"worker", "management", "testing.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules():
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE)
        if relative.parts[0] not in MAY_IMPORT_WORKER and relative.parts[0] != "migrations":
            yield relative, imported_modules(path)


def test_core_never_imports_the_worker_jobs_beat_or_the_project():
    offenders = {
        str(relative): sorted(n for n in names
                              if n.split(".")[0] in ("jobs_beat", "project")
                              or n == "jobs.worker" or n.startswith("jobs.worker."))
        for relative, names in core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_jobs_beat_never_imports_the_jobs_admin():
    beat = CORE.parent / "jobs_beat"
    offenders = {str(p.relative_to(beat)): sorted(n for n in imported_modules(p)
                                                  if n == "jobs.admin" or n.startswith("jobs.admin."))
                 for p in beat.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_setting_is_read_by_the_code():
    """A JOBS key that nothing reads would be accepted by manage.py check and do nothing."""
    from jobs.conf import DEFAULTS

    code = "\n".join(p.read_text() for p in CORE.rglob("*.py")
                     if p.name not in ("conf.py", "checks.py") and "migrations" not in p.parts)
    code += "\n".join(p.read_text() for p in (CORE.parent / "jobs_beat").rglob("*.py"))
    assert [key for key in DEFAULTS if key not in code] == []
