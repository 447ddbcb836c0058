"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), without a dependency.

systemd tells a service where to report in the ``NOTIFY_SOCKET`` environment variable (a
datagram socket: a path, or an abstract name written with a leading ``@``), and how often its
watchdog expects a ``WATCHDOG=1`` in ``WATCHDOG_USEC`` (for the process ``WATCHDOG_PID``, when
set). Outside systemd neither is set and :func:`notify` does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger("jobs.worker")


def notify(*states: str) -> bool:
    """Send ``states`` ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=...") to systemd, in
    one datagram; False when not run by systemd with ``Type=notify`` or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        logger.warning("Could not notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True


def watchdog_seconds() -> float | None:
    """The interval of systemd's watchdog for this process (``WatchdogSec=``), or None."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None
