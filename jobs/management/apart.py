"""A management command's system checks, run in a forked child process.

The checks import what they check: the project's URLconf, and with it every view it names
(the admin's, the dashboard's, a metrics endpoint with prometheus_client). A worker runs no
view, yet a module once imported stays for the life of the process, and a prefork worker's
children inherit it: in the benchmark's worker, about 3.5 MB of its memory. Run in a child
that exits once it has reported, the checks are the same, say the same and stop the command
the same way, and what they imported leaves with the child.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import traceback

from django.core.management.base import CommandError, OutputWrapper
from django.db import connections


def check_apart(command, check, **options) -> None:
    """Call ``check(**options)`` (``BaseCommand.check`` of ``command``) in a forked child:
    what it writes to the command's stdout and stderr is written here, and what it raises
    is raised here. Where there is no ``fork``, the checks run in this process."""
    if not hasattr(os, "fork"):
        check(**options)
        return
    # The child must neither use nor close this process's database sessions, and must not
    # write again what this process's buffers still hold.
    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _report(command, check, options, write_end)  # never returns
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    if not report:
        raise CommandError("The system checks' process ended without reporting.")
    out, err, raised = pickle.loads(report)
    if out:
        command.stdout.write(out, style_func=_as_is, ending="")
    if err:
        command.stderr.write(err, style_func=_as_is, ending="")
    if raised is not None:
        raise raised


def _report(command, check, options: dict, fd: int) -> None:
    """In the child: run the checks, send (stdout, stderr, exception or None), exit."""
    out, err = io.StringIO(), io.StringIO()
    command.stdout, command.stderr = OutputWrapper(out), OutputWrapper(err)
    try:
        check(**options)
        raised = None
    except BaseException as exc:  # noqa: BLE001  (whatever it is, the parent raises it)
        raised = exc
    try:
        try:
            report = pickle.dumps((out.getvalue(), err.getvalue(), raised))
        except Exception:  # an exception that doesn't pickle: its traceback, as text
            text = "".join(traceback.format_exception(raised))
            report = pickle.dumps((out.getvalue(), err.getvalue(), CommandError(text)))
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(report)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)  # no atexit handler or finalizer of the parent's objects runs here


def _as_is(text: str) -> str:
    return text  # already styled by the checks
