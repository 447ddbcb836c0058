"""``jobs_worker --pidfile``: the process id in a file, and one worker per file.

A supervisor or logrotate finds the worker by it (``kill -HUP $(cat worker.pid)``). A file
naming a process that is alive means another worker runs with it: this one refuses to start.
A file left by a worker that died (its process is gone) is taken over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from jobs.exceptions import JobsError


class AlreadyRunning(JobsError):
    """The pidfile names a live process."""


@contextlib.contextmanager
def pidfile(path: str | os.PathLike):
    """Hold ``path`` with this process's id while the block runs; removed after, if still
    ours. Raises :class:`AlreadyRunning` when it names another live process."""
    path = Path(path)
    _claim(path)
    try:
        yield path
    finally:
        if _read(path) == os.getpid():
            path.unlink(missing_ok=True)


def _claim(path: Path) -> None:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pid = _read(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise AlreadyRunning(f"{path} names process {pid}, which is running: another "
                                     "worker uses this pidfile") from None
            path.unlink(missing_ok=True)  # stale: its process is gone (or the file is junk)
            continue
        with os.fdopen(fd, "w") as out:
            out.write(f"{os.getpid()}\n")
        return
    raise AlreadyRunning(f"{path} was taken by another process while this one started")


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
