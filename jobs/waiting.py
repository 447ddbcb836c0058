"""Waiting on sockets, under gevent and eventlet too."""

from __future__ import annotations

import select

from kombu.utils.compat import detect_environment


def readable_within(sockets, timeout: float) -> bool:
    """Whether one of ``sockets`` (file descriptors) becomes readable within ``timeout``
    seconds. Under gevent or eventlet through ``select``, which they make cooperative, as
    kombu's own poller does there."""
    if detect_environment() != "default":
        return bool(select.select(sockets, (), (), timeout)[0])
    poller = select.poll()
    for fd in sockets:
        poller.register(fd, select.POLLIN)
    try:
        return bool(poller.poll(timeout * 1000))
    except OSError:  # a socket closed under us: the broker's drain says why
        return True
