"""The worker: consume from the broker, hand jobs to the pool, acknowledge their outcomes.

The main thread owns the kombu connection (channels are not thread-safe): it drains
events, dispatches deliveries to the pool, and acknowledges from the pool's completions.
Acknowledgement comes after the outcome is recorded (at-least-once).

The worker knows no feature: every message goes through the middleware's ``receive``
hooks (which may hold it, park it or refuse it) and every outcome through their
``completed`` hooks; the middleware act through the methods under "For middleware".
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import Counter

from kombu import Consumer
from kombu.serialization import prepare_accept_content

from jobs import lifecycle
from jobs.broker import get_broker, new_connection
from jobs.conf import settings
from jobs.database import ERRORS as DATABASE_ERRORS, database
from jobs.execution import Delivery, Execution, body_of
from jobs.messages import decode
from jobs.middleware import stack
from jobs.outcome import Kind, Outcome
from jobs.registry import registry
from jobs.waiting import readable_within
from jobs.worker import heartbeat
from jobs.worker.pools import POOLS
from jobs.worker.receiving import delivery_of, refusal

logger = logging.getLogger("jobs.worker")

DEFAULT_PREFETCH_MULTIPLIER = 4  # Celery's
POLL = 0.1  # seconds the main thread waits on the broker before looking at completions
ACK_WINDOW = 0.02  # seconds acknowledgements may wait to be sent together
HELD_ROOM = 100  # deliveries held back that don't count against the prefetch window (at least)


class ColdShutdown(BaseException):
    """A second signal: leave at once; unfinished messages are redelivered later."""


class Worker:
    def __init__(self, queues: list[str] | None = None, concurrency: int | None = None,
                 pool: str | None = None, hostname: str | None = None,
                 prefetch_multiplier: int | None = None, shutdown_timeout: float | None = None,
                 max_tasks_per_child: int | None = None, max_memory_per_child: int | None = None,
                 beat: bool = False, autoscale: tuple[int, int] | None = None) -> None:
        self.queues = queues or [settings.TASK_DEFAULT_QUEUE]
        # What a message left over from a cancelled queue is told by, if none is left.
        self._started_with = list(self.queues)
        #: (MAX, MIN) pool sizes (jobs.middleware.autoscale), or None: a pool of fixed size.
        self.autoscale = autoscale
        self.concurrency = (autoscale[0] if autoscale else None) or concurrency \
            or settings.WORKER_CONCURRENCY or os.cpu_count() or 1
        self.pool_name = pool or settings.WORKER_POOL
        self.hostname = hostname or f"jobs@{socket.gethostname()}"
        multiplier = (settings.WORKER_PREFETCH_MULTIPLIER if prefetch_multiplier is None
                      else prefetch_multiplier)
        #: No multiplier given: Celery's 4, and jobs.middleware.prefetch widens the window
        #: while the jobs are short.
        self.adaptive_prefetch = multiplier is None
        if multiplier is None:
            multiplier = DEFAULT_PREFETCH_MULTIPLIER
        #: The prefetch window as configured; ``window`` is the one in force.
        self.prefetch = max(1, self.concurrency * multiplier) if multiplier else 0
        self.window = self.prefetch
        self.shutdown_timeout = (settings.WORKER_SHUTDOWN_TIMEOUT if shutdown_timeout is None
                                 else shutdown_timeout)
        self.max_tasks_per_child = max_tasks_per_child or settings.WORKER_MAX_TASKS_PER_CHILD
        self.max_memory_per_child = (max_memory_per_child
                                     or settings.WORKER_MAX_MEMORY_PER_CHILD)
        self.beat = beat
        self.accept = prepare_accept_content(settings.ACCEPT_CONTENT)  # MIME types
        self.stopping = False
        self.processed = 0
        self._generation = 0
        # (generation, delivery tag) -> (kombu Message, Delivery)
        self._inflight: dict[tuple, tuple[object, Delivery]] = {}
        self._acked_early: set[tuple] = set()
        # Deliveries a middleware holds back (waiting for a rate limit, an eta): tag -> name
        self._held: dict[tuple, str] = {}
        self._prefetch_now = 0  # the prefetch count the consumer was last given
        self._consumed: dict[str, str] = {}  # queue name -> the name it is consumed as
        self._broken: Exception | None = None
        self._left_unacked = False  # messages came while the database was down (_on_message)
        self._flush = None  # the channel's batched acknowledgement, where it has one
        self._flush_at = 0.0
        self._shut_down = False
        self._collecting = False  # this thread collects the pool's outcomes (run())
        self._collected = False  # _fetch collected them just now: _tick needn't look again
        self._watching = False  # this thread waits on the broker's sockets itself (run())
        self._idle_reads = 0  # the broker's sockets were readable and gave nothing, in a row
        self.pool = POOLS[self.pool_name](
            autoscale[1] if autoscale else self.concurrency, self.hostname, self.accept,
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
        )
        self.heart = heartbeat.Heart(self)
        self.middleware = stack()
        self.connection = self.channel = self.consumer = None
        self.started_at = time.monotonic()

    # Running -----------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until told to stop; returns the process exit code."""
        self._install_signal_handlers()
        # Before the pool starts: what a first database query and broker connection load is
        # then loaded once and shared with prefork children, not loaded again in each process.
        self.heart.start()
        self._connect_once()
        # Where the broker's sockets can be watched here, this thread collects the pool's
        # outcomes in the same wait (no thread of the pool's hands them over).
        self._watching = get_broker().watches_sockets
        self._collecting = self._watching and self.pool.collect_here()
        try:
            self.pool.start()
        except BaseException:
            self.heart.stop()  # e.g. a gevent pool in a process gevent didn't patch
            raise
        self.middleware.notify("worker_started", self)
        code = 0
        try:
            self._consume_forever()
            self._warm_shutdown()
        except ColdShutdown:
            logger.warning("Cold shutdown: leaving unfinished jobs to be delivered again")
            self.pool.terminate()
            code = 1
        except BaseException:
            # A bug: end the children too (they ignore SIGTERM, and the interpreter would
            # wait for them forever on its way out); their messages are delivered again.
            self.pool.terminate()
            raise
        finally:
            self.middleware.notify("worker_stopped", self)
            self.heart.stop()
        return code

    def _consume_forever(self) -> None:
        backoff = 0.5
        while not self.stopping:
            self._wait_for_database()
            if self.stopping:
                break
            conn = new_connection()
            try:
                conn.ensure_connection(max_retries=1)
                self._consume(conn)
                backoff = 0.5
            except (conn.connection_errors + conn.channel_errors + (OSError,)
                    + DATABASE_ERRORS) as exc:
                if self.stopping:
                    break
                self._forget_inflight()
                if database.failed(exc) and database.down:
                    continue  # the database (django://'s, or one a step needed): wait for it
                logger.error("Broker connection lost (%s: %s); reconnecting in %.1fs",
                             type(exc).__name__, exc, backoff)
                why = get_broker().explain(exc)
                if why:
                    running = ", ".join(f"{d.headers.get('task')}[{d.headers.get('id')}]"
                                        for d in self.pool.running_deliveries())
                    logger.error("%s%s", why, f". Running here: {running}" if running else "")
                self._sleep_processing(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self.channel = self.consumer = None
                self._close(conn)

    def _connect_once(self) -> None:
        """Connect to the broker and open a channel, then close them: kombu's transport and
        the client library set up their state on a first connection. A broker that doesn't
        answer is left to the consuming loop, which reports it and tries again."""
        conn = new_connection()
        try:
            conn.ensure_connection(max_retries=0)
            conn.channel()
        except Exception:
            pass
        finally:
            self._close(conn)

    def _consume(self, conn) -> None:
        self._generation += 1
        channel = conn.channel()
        consumer = Consumer(channel, queues=get_broker().consuming(conn, self.queues),
                            on_message=self._on_message, on_decode_error=self._on_undecodable,
                            auto_declare=True)
        self.connection, self.channel, self.consumer = conn, channel, consumer
        # What each queue is consumed as (a broadcast queue: the worker's own, named on binding).
        self._consumed = {name: queue.name
                          for name, queue in zip(self.queues, consumer.queues, strict=True)}
        self._prefetch_now = 0
        self._widen_prefetch()
        consumer.consume()
        self._broken = None
        self._left_unacked = False
        # Acknowledge a batch of completions in one round trip where the transport can.
        self._flush = get_broker().batch_acks(channel)
        logger.info("Connected to %s; consuming from %s", get_broker().display_url,
                    ", ".join(self.queues))
        while not self.stopping:
            self._tick()
            if self._broken is not None:
                raise ConnectionError(f"acknowledgement failed: {self._broken}") from self._broken
            if not database.available() or self._left_unacked:
                if self._stand_down():
                    return  # the connection closes, handing back what it held; see above
                self._wait_for_completion(POLL)
                conn.heartbeat_check()
            elif self._enough_in_hand():
                self._wait_for_completion(POLL)
                conn.heartbeat_check()
            else:
                self._fetch(conn)
        consumer.cancel()
        self.middleware.call("stand_down", self)
        self._hand_back_backlog()
        self._warm_shutdown()  # while the running jobs' messages can still be acknowledged

    # The database unreachable (jobs.database) -------------------------------------------

    def _stand_down(self) -> bool:
        """Take no more jobs while the database is unreachable: hand back those not started
        yet, let the running ones end (their outcomes are acknowledged, or handed back when
        they can't be recorded). True once none is left: the broker connection can close,
        which hands back whatever else it holds (messages left unacknowledged too) and
        leaves no consumer state behind."""
        self.middleware.call("stand_down", self)
        self._hand_back_backlog()
        if self._inflight:
            return False
        self._flush_acks(force=True)
        return True

    def _wait_for_database(self) -> None:
        """Without a broker connection, until the database answers (probed once a second)."""
        while not self.stopping and not database.available():
            self._sleep_processing(POLL)

    def _enough_in_hand(self) -> bool:
        """Whether to wait for completions rather than fetch more: the prefetch count is
        reached, or the room left is less than half of it while the pool still has jobs
        waiting (fetching then takes several messages per round trip instead of one)."""
        if not self.window:
            return False
        inflight = len(self._inflight) - self._held_room()
        room = self.window - inflight
        return room <= 0 or (room < self.window // 2 and inflight > self.concurrency)

    def _fetch(self, conn) -> None:
        """Take what the broker has sent, waiting up to POLL for it; where this thread
        collects the pool's outcomes, for whichever comes first, an outcome or the broker.
        Where the broker's sockets can be watched, this thread waits on them itself (what
        the transport watches besides kombu's own connection included)."""
        timeout, readable = POLL, False
        if self._watching:  # (collecting implies it)
            sockets = get_broker().sockets(conn)
            if sockets is None:  # can't tell now: the outcomes wait for this drain (rare)
                timeout = POLL / 10 if self._collecting else POLL
            elif sockets:
                if self._idle_reads >= 3:
                    # Readable three times in a row, yet nothing to take (kombu holds back
                    # while its prefetch count is reached): the outcomes alone, this turn.
                    sockets, self._idle_reads = (), 0
                if self._collecting:
                    readable = self.pool.collect(POLL, sockets)
                    self._collected = True
                elif not sockets:
                    self._wait_for_completion(POLL)
                    return
                else:
                    readable = readable_within(sockets, POLL)
                if not readable and not self.pool.completions.empty():
                    return  # outcomes first; the broker again at the next turn
                timeout = 0
            else:
                timeout = 0  # read already
        try:
            conn.drain_events(timeout=timeout)
            self._idle_reads = 0
        except TimeoutError:
            if readable:
                self._idle_reads += 1
            conn.heartbeat_check()
        finally:
            self.pool.flush()  # what came in this drain, handed over together

    def _tick(self) -> None:
        self._process_completions()
        self.middleware.call("tick", self)
        self._widen_prefetch()
        self.pool.maintain()
        self.heart.maybe_beat()

    # Receiving ---------------------------------------------------------------------------

    def _on_message(self, message) -> None:
        if database.down:
            # Left unacknowledged: the broker has it again when the connection closes
            # (_stand_down), as it does for what arrives while it closes.
            self._left_unacked = True
            return
        key = (self._generation, message.delivery_tag)
        delivery = delivery_of(message, key, self.queues or self._started_with)
        self._inflight[key] = (message, delivery)
        reason = refusal(delivery, self.accept)
        if reason:
            self.dead_letter(delivery, reason)
            return
        delivery = self.middleware.receive(self, delivery)
        if delivery is not None:
            self.pool.submit(delivery)

    def _on_undecodable(self, message, exc) -> None:
        """kombu could not unpack a message (its body would not decompress, or inflates past
        TASK_MAX_MESSAGE_SIZE): it goes through the same checks, which dead-letter it."""
        if not hasattr(message, "delivery_tag"):  # the transport could not even read it
            logger.error("Dropped a message the transport could not read: %s", exc)
            return
        self._on_message(message)

    # Completing --------------------------------------------------------------------------

    def _wait_for_completion(self, timeout: float) -> None:
        if self._collecting:
            self.pool.collect(timeout)
        else:
            try:
                item = self.pool.completions.get(timeout=timeout)
            except queue.Empty:
                return
            self._complete(*item)
        self._complete_all()

    def _process_completions(self) -> None:
        if self._collecting and not self._collected:  # (unless _fetch just did)
            self.pool.collect(0)
        self._collected = False
        self._complete_all()

    def _complete_all(self) -> None:
        while True:
            try:
                item = self.pool.completions.get_nowait()
            except queue.Empty:
                break
            self._complete(*item)
        self._flush_acks(force=not self._inflight, idle=not self._inflight)

    def _flush_acks(self, force: bool = False, idle: bool = False) -> None:
        """Send the acknowledgements noted since the last flush: at once when nothing else is
        in flight, else at most every ACK_WINDOW seconds (one round trip for the batch).
        ``idle`` (nothing in flight): the broker may keep them for its next round trip."""
        if self._flush is None:
            return
        now = time.monotonic()
        if not force and now < self._flush_at:
            return
        self._flush_at = now + ACK_WINDOW
        try:
            self._flush(idle=idle)
        except Exception as exc:  # as in _complete: start over on a fresh connection
            logger.warning("Could not acknowledge finished jobs: %s", exc)
            self._broken = exc

    def _complete(self, key, outcome: Outcome) -> None:
        message, delivery = self._inflight.pop(key, None) or (None, None)
        early = key in self._acked_early
        self._acked_early.discard(key)
        self.processed += 1
        if outcome.kind is Kind.NO_DATABASE:
            self._no_database(outcome)
        elif self.middleware.completing:
            outcome = self.middleware.completed(self, delivery, outcome)
        if message is None or early:
            return  # acknowledged already, or its connection is gone (redelivered anyway)
        try:
            if outcome.kind in (Kind.REQUEUE, Kind.NO_DATABASE):
                message.reject(requeue=True)
            else:
                message.ack()
        except Exception as exc:  # the connection died under us: the broker redelivers
            if not database.failed(exc):  # django://'s database: said once, not per job
                logger.warning("Could not acknowledge %s: %s", outcome.job_id, exc)
            # kombu still counts the message as unacknowledged, and would stop fetching once
            # the prefetch count is reached: start over on a fresh connection.
            self._broken = exc

    def _no_database(self, outcome: Outcome) -> None:
        """A job could not start or record its outcome for a database connection error: it
        runs again. Whether the database is down is said once, not for each job."""
        down = database.reported(outcome.reason)
        (logger.debug if down else logger.warning)(
            "Job %s[%s] will run again: its database connection failed (%s)", outcome.name,
            outcome.job_id, outcome.reason, extra={"job_id": outcome.job_id})

    # For middleware ----------------------------------------------------------------------

    def resume(self, delivery: Delivery, after) -> None:
        """Go on with ``delivery``, which middleware ``after`` held back: through the
        ``receive`` hooks listed after it, then to the pool."""
        self._held.pop(delivery.tag, None)
        delivery = self.middleware.receive(self, delivery, after)
        if delivery is not None:
            self.pool.submit(delivery)

    def hold(self, delivery: Delivery) -> None:
        """A middleware keeps ``delivery`` waiting (for its rate limit, or its eta) until it
        calls :meth:`resume`. Held deliveries don't count against the prefetch window (up to
        :data:`HELD_ROOM` of them, or a second window), so that other jobs keep coming; the
        worker's row shows how many of each job wait (:meth:`held`)."""
        self._held[delivery.tag] = delivery.headers.get("task", "")

    def held(self) -> dict[str, int]:
        """How many deliveries of each job the middleware hold back now."""
        return dict(Counter(self._held.values()))

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``'s message: it is done with, here."""
        message = self._take(delivery)
        if message is not None:
            message.ack()

    def ack_lost(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``, received on a connection lost since, where the broker
        can (:meth:`jobs.broker.Broker.ack_lost`); elsewhere it comes back on its own."""
        self._settle_lost(get_broker().ack_lost, delivery, "acknowledge")

    def give_back_lost(self, delivery: Delivery) -> None:
        """Hand back ``delivery``, received on a connection lost since, whose run ended
        without an outcome, where the broker can (:meth:`jobs.broker.Broker.give_back_lost`):
        it is delivered again now; elsewhere, once the broker's hold on it runs out."""
        self._settle_lost(get_broker().give_back_lost, delivery, "hand back")

    def _settle_lost(self, settle, delivery: Delivery, doing: str) -> None:
        if self.channel is None:
            return
        try:
            settle(self.channel, delivery.tag[1])
        except Exception as exc:  # it comes back on its own, later
            logger.warning("Could not %s %s: %s", doing, delivery.headers.get("id"), exc)

    def requeue(self, delivery: Delivery) -> None:
        """Hand ``delivery``'s message back to the broker, to be delivered again."""
        message = self._take(delivery)
        if message is not None:
            message.requeue()

    def ack_early(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``'s message now, before its job runs (at-most-once)."""
        message, _ = self._inflight[delivery.tag]
        message.ack()
        self._acked_early.add(delivery.tag)
        self._flush_acks(force=True)  # at once: the job must not run again if we die now

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Store ``delivery`` as a dead letter with ``reason`` and acknowledge it."""
        lifecycle.dead_letter(delivery, reason, self.hostname)
        self.ack(delivery)

    def record_failure(self, delivery: Delivery | None, outcome: Outcome,
                       error: Exception) -> Outcome:
        """Record FAILURE with ``error`` for a job whose own process could not (it was
        killed), and tell the observers; returns the FAILED outcome, or NO_DATABASE (its
        message is handed back, never acknowledged without its outcome) when the database
        can't be reached."""
        failed = Outcome(Kind.FAILED, outcome.job_id, outcome.name,
                         f"{type(error).__name__}: {error}", exception=error)
        if delivery is None:
            logger.error("Job %s[%s] failed: %s", outcome.name, outcome.job_id, error,
                         extra={"job_id": outcome.job_id})
            return failed
        try:
            message = decode(delivery.headers, body_of(delivery), delivery.content_type,
                             delivery.content_encoding, self.accept, delivery.queue)
            lifecycle.mark_failed(message, error, "", None, self.hostname)
        except DATABASE_ERRORS as exc:
            if database.failed(exc):
                return Outcome(Kind.NO_DATABASE, outcome.job_id, outcome.name, str(exc))
            logger.exception("Could not record the failure of %s", outcome.job_id)
            return failed
        except Exception:
            logger.exception("Could not record the failure of %s", outcome.job_id)
            return failed
        execution = Execution(message, registry.get(message.name), self.hostname, delivery)
        self.middleware.notify("finished", execution, failed)
        return failed

    def deliveries(self) -> list[Delivery]:
        """The deliveries received and not yet acknowledged: running, waiting for a slot,
        or held by a middleware."""
        return [delivery for _, delivery in self._inflight.values()]

    def add_queue(self, name: str) -> bool:
        """Consume from queue ``name`` too, from now on; False if it does already."""
        if name in self.queues:
            return False
        self.queues.append(name)
        if self.consumer is not None:
            queue = self.consumer.add_queue(get_broker().consuming(self.connection, [name])[0])
            self._consumed[name] = queue.name
            self.consumer.consume()
        return True

    def cancel_queue(self, name: str) -> bool:
        """Take no more messages from queue ``name``; False if it doesn't consume from it.
        Those received already run."""
        if name not in self.queues:
            return False
        self.queues.remove(name)
        if self.consumer is not None:
            self.consumer.cancel_by_queue(self._consumed.pop(name, name))
        return True

    def _take(self, delivery: Delivery):
        """The message of ``delivery``, no longer in flight; None if acknowledged already
        or its connection is gone."""
        message, _ = self._inflight.pop(delivery.tag, (None, None))
        self._held.pop(delivery.tag, None)
        if delivery.tag in self._acked_early:
            self._acked_early.discard(delivery.tag)
            return None
        return message

    # Stopping ----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # run in a thread (tests): stopped with stop()
        def warm(signum, frame):
            if self.stopping:
                raise ColdShutdown()
            logger.warning("Warm shutdown (%s): finishing running jobs, up to %ss; send it "
                           "again to leave at once", signal.Signals(signum).name,
                           self.shutdown_timeout)
            self.stopping = True

        def cold(signum, frame):
            raise ColdShutdown()

        signal.signal(signal.SIGTERM, warm)
        signal.signal(signal.SIGINT, warm)
        signal.signal(signal.SIGQUIT, cold)

    def stop(self) -> None:
        self.stopping = True

    def _hand_back_backlog(self) -> None:
        for delivery in self.pool.take_backlog():
            self.requeue(delivery)

    def _warm_shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        deadline = time.monotonic() + self.shutdown_timeout
        while self.pool.running() and time.monotonic() < deadline:
            self._wait_for_completion(POLL)
        finished = self.pool.stop(0 if self.pool.running() else 1)
        self._process_completions()
        self._flush_acks(force=True)
        if not finished:
            logger.warning("Shutdown timeout: %d job(s) left to be delivered again",
                           len(self._inflight))

    def _sleep_processing(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self._wait_for_completion(min(POLL, seconds))
            self.heart.maybe_beat()

    def _forget_inflight(self) -> None:
        self._flush = None
        # Their acknowledgements went with the connection, and the broker delivers their
        # messages again: the jobs not started yet are dropped rather than run twice, and
        # the broker is asked to keep the running ones' messages for their runs where it
        # can (jobs.middleware.redelivery acknowledges them when the runs end).
        self.pool.take_backlog()
        if self.channel is not None:
            running = [d.tag[1] for d in self.pool.running_deliveries()
                       if d.tag[0] == self._generation]
            try:
                get_broker().keep(self.channel, running)
            except Exception as exc:  # they come back from the broker, and wait for the runs
                logger.debug("Could not keep the running jobs' messages: %s", exc)
        self.middleware.call("connection_lost", self)
        self._inflight.clear()
        self._acked_early.clear()
        self._held.clear()

    def _held_room(self) -> int:
        return min(len(self._held), max(self.prefetch, HELD_ROOM))

    def set_window(self, size: int) -> None:
        """Hold up to ``size`` messages from now on (jobs.middleware.prefetch), besides those
        a middleware holds back; the consumer is told on the next turn of the loop."""
        if self.prefetch:
            self.window = size
            # What it holds beyond the base window, shared among the slots, may wait in
            # them: a prefork child then goes from one job to the next on its own.
            self.pool.set_reserve((size - self.prefetch) // max(1, self.concurrency))

    def _widen_prefetch(self) -> None:
        """Give the consumer room for the deliveries held back, as their number changes."""
        if not self.window or self.consumer is None:
            return
        count = self.window + self._held_room()
        if count != self._prefetch_now:
            get_broker().set_prefetch(self.consumer, count)
            self._prefetch_now = count

    def _close(self, conn) -> None:
        try:
            conn.release()
        except Exception:
            pass
