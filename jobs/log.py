"""Log output of the commands (worker, scheduler), for projects that configure none."""

import logging

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def configure(level: str) -> None:
    """Set the ``jobs`` loggers to ``level``; print to stderr unless logging is configured."""
    logger = logging.getLogger("jobs")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
