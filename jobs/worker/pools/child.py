"""A prefork child: its loop, and what crosses its pipe to and from the parent."""

from __future__ import annotations

import functools
import os
import pickle
import signal

from jobs import connections
from jobs.execution import Delivery
from jobs.outcome import Kind, Outcome
from jobs.worker.pools.base import Completion, Pool
from jobs.worker.pools.pipe import Pipe

RECYCLE_EXIT = 75  # a child leaving to be replaced by a fresh one


# What crosses a child's pipe, as plain tuples: a job's per-message cost in the parent is
# mostly this traffic, and pickling dataclasses field by field took twice as long.
STOP = pickle.dumps(None)


def pack_delivery(d: Delivery) -> bytes:
    return pickle.dumps((d.tag, d.headers, d.body, d.content_type, d.content_encoding, d.queue,
                         d.properties, d.delivery_info, d.revoked), pickle.HIGHEST_PROTOCOL)


def unpack_delivery(data: bytes) -> Delivery | None:
    fields = pickle.loads(data)
    return None if fields is None else Delivery(*fields)


def pack_outcome(tag, o: Outcome) -> bytes:
    return pickle.dumps((tag, o.kind.value, o.job_id, o.name, o.reason, o.runtime),
                        pickle.HIGHEST_PROTOCOL)


def unpack_outcome(data: bytes) -> Completion:
    tag, kind, *rest = pickle.loads(data)
    return tag, Outcome(Kind(kind), *rest)


def child_main(pipe: Pipe, hostname: str, accept: set[str], max_memory_kb: int | None) -> None:
    """The loop of a prefork child: receive a delivery, run it, send back the outcome. What
    the parent handed over meanwhile waits in the pipe, read together when this one ends."""
    from jobs.middleware import stack

    # The parent decides when we stop: a Ctrl-C or a SIGTERM sent to the whole process
    # group must not kill jobs the parent means to finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    _die_with_parent()
    stack().notify("process_started")
    pool = Pool(1, hostname, accept)
    try:
        while True:
            for data in pipe.frames():
                delivery = unpack_delivery(data)
                if delivery is None:
                    return
                outcome = pool._run(delivery)
                pipe.send(pack_outcome(delivery.tag, outcome))
                if max_memory_kb and _peak_rss_kb() > max_memory_kb:
                    # What was read behind it never ran: the parent hands it to another.
                    connections.close_all()
                    os._exit(RECYCLE_EXIT)
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        connections.close_all()


def _peak_rss_kb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this child if the worker dies (even by SIGKILL), so an
    orphan never finishes a job whose message the broker already gave to another worker."""
    prctl = libc_prctl()
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


@functools.cache
def libc_prctl():
    """libc's ``prctl`` (None where there is none). The worker loads it before forking, so
    that its children share the objects ctypes makes for it instead of each making its own."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
