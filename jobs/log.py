"""Log output of the commands (worker, scheduler), for projects that configure none, and
``--logfile``: a file reopened on SIGHUP, as logrotate expects."""

import logging
import logging.handlers
import signal
import sys

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def configure(level: str, logfile: str | None = None) -> None:
    """Set the ``jobs`` loggers to ``level``; print to stderr unless logging is configured.

    With ``logfile``, the ``jobs`` loggers write to that file instead of the console (their
    other handlers, mail or an error tracker, stay), and SIGHUP reopens it: after logrotate
    moves it away, ``kill -HUP`` makes the worker write to a new file at once. The handler
    also notices a moved file by itself before each line (so do the prefork children, which
    share it).
    """
    logger = logging.getLogger("jobs")
    logger.setLevel(level)
    if logfile:
        handler = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        for console in [h for h in logger.handlers if _is_console(h)]:
            logger.removeHandler(console)
        logger.addHandler(handler)
        logger.propagate = False
        signal.signal(signal.SIGHUP, lambda signum, frame: handler.reopenIfNeeded())
        return
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)


def _is_console(handler: logging.Handler) -> bool:
    return (type(handler) is logging.StreamHandler
            and getattr(handler, "stream", None) in (sys.stderr, sys.stdout))
