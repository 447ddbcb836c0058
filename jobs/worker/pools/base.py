"""What every pool is: it runs deliveries and reports their outcomes on ``completions``."""

from __future__ import annotations

import logging
import queue

from jobs import connections
from jobs.database import is_connection_error
from jobs.execution import Delivery, execute
from jobs.outcome import Kind, Outcome

logger = logging.getLogger("jobs.worker")

Completion = tuple[object, Outcome]  # (delivery tag, outcome)


class Pool:
    name = "base"
    #: Its jobs run in the worker's main loop (``solo``): the loop makes no turn while one runs.
    blocks_loop = False

    def __init__(self, concurrency: int, hostname: str, accept: set[str], **options) -> None:
        self.concurrency = concurrency
        self.hostname = hostname
        self.accept = accept
        self.options = options
        self.completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()

    def start(self) -> None: ...

    def submit(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def maintain(self) -> None:
        """Called often from the main thread: replace dead workers and the like."""

    def stop(self, timeout: float) -> bool:
        """Finish running jobs within ``timeout``; True if all finished."""
        return True

    def terminate(self) -> None:
        """Stop at once; running jobs are abandoned (their messages will be redelivered)."""

    def running(self) -> int:
        return 0

    def running_ids(self) -> list[str]:
        """Ids of the jobs running now (for revocation with terminate)."""
        return [delivery.headers.get("id") for delivery in self.running_deliveries()]

    def running_deliveries(self) -> list[Delivery]:
        """The deliveries whose jobs run now."""
        return []

    def waiting(self) -> int:
        """Deliveries handed to the pool that wait for a free slot."""
        return 0

    def resize(self, size: int) -> None:
        """Run up to ``size`` jobs at once from now on (``--autoscale``): grow at once; shrink
        by idle slots only, never stopping a running job."""
        raise NotImplementedError(f"the {self.name} pool has a fixed size")

    def set_reserve(self, count: int) -> None:
        """Let each slot be handed up to ``count`` deliveries beyond the one it runs, where
        the pool can (prefork); the others hand a slot one at a time."""

    def flush(self) -> None:
        """Pass on what :meth:`submit` was handed in this turn and holds back to pass on
        together (prefork: the deliveries for children that are busy)."""

    def collect_here(self) -> bool:
        """Have the caller's thread collect the outcomes from now on (:meth:`collect`), in
        its own wait, rather than a thread of the pool's, where the pool can (prefork, asked
        before :meth:`start`); True if it does."""
        return False

    def collect(self, timeout: float, sockets=()) -> bool:
        """Put the outcomes ready on ``completions``, waiting up to ``timeout`` seconds for
        one, or for one of ``sockets`` to become readable; True if one of those is. Only
        after :meth:`collect_here` said yes."""
        raise NotImplementedError

    def take_backlog(self) -> list[Delivery]:
        """Deliveries not started yet, taken back (to return them to the broker)."""
        return []

    def terminate_job(self, job_id: str) -> bool:
        """Stop a running job if the pool can (prefork kills its child); True if it did."""
        return False

    def _run(self, delivery: Delivery) -> Outcome:
        connections.before_job()
        try:
            return execute(delivery, self.hostname, self.accept)
        except Exception as exc:  # a bug or the database down: don't lose the message
            job_id, name = delivery.headers.get("id") or "", delivery.headers.get("task") or ""
            reason = f"{type(exc).__name__}: {exc}"
            if is_connection_error(exc):  # the worker says it once, not a traceback per job
                return Outcome(Kind.NO_DATABASE, job_id, name, reason=reason)
            logger.exception("Could not run job %s", job_id, extra={"job_id": job_id})
            return Outcome(Kind.REQUEUE, job_id, name, reason=reason)
        finally:
            connections.after_job()
