"""Tables: job results, dead letters, worker heartbeats, the ``django://`` queue, leases."""

from __future__ import annotations

from datetime import timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone


class States(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RECEIVED = "RECEIVED", "Received"
    STARTED = "STARTED", "Started"
    RETRY = "RETRY", "Retry"
    SUCCESS = "SUCCESS", "Success"
    FAILURE = "FAILURE", "Failure"
    REVOKED = "REVOKED", "Revoked"


#: States after which a job will not change again.
READY_STATES = frozenset({States.SUCCESS, States.FAILURE, States.REVOKED})
#: States of a job that has not started (or waits to start again).
WAITING_STATES = frozenset({States.PENDING, States.RECEIVED, States.RETRY})
#: States whose result is an exception.
EXCEPTION_STATES = frozenset({States.FAILURE, States.REVOKED, States.RETRY})


class JobRecordQuerySet(models.QuerySet):
    def ready(self):
        return self.filter(state__in=READY_STATES)

    def failed(self):
        return self.filter(state=States.FAILURE)

    def succeeded(self):
        return self.filter(state=States.SUCCESS)

    def running(self):
        """Jobs running now: STARTED, or in a custom state a running job set with
        ``update_state`` (PROGRESS, ...), which is any state but the waiting and final ones.
        Written as ranges between those states, so that the ``state`` index skips the
        millions of finished rows instead of reading them."""
        known = sorted(WAITING_STATES | READY_STATES)
        between = Q(state__lt=known[0]) | Q(state__gt=known[-1])
        for low, high in zip(known, known[1:], strict=False):
            between |= Q(state__gt=low, state__lt=high)
        return self.filter(between)

    def older_than(self, age: timedelta, now=None):
        return self.filter(date_done__lt=(now or timezone.now()) - age)

    def expired(self, expires: timedelta, now=None):
        """Finished results older than ``expires`` (what ``RESULT_EXPIRES`` removes)."""
        return self.ready().older_than(expires, now)


class JobRecord(models.Model):
    """The state and outcome of one job, written by workers, read from any process.

    ``state`` is a free string so that jobs may set custom states with ``update_state``;
    :class:`States` holds the built-in ones.
    """

    job_id = models.CharField("job id", max_length=255)
    name = models.CharField("job name", max_length=255, blank=True)
    state = models.CharField(max_length=50, default=States.PENDING)
    args = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    kwargs = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    result = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    traceback = models.TextField(blank=True)
    meta = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    retries = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(
        default=0, help_text="Times a worker started this attempt; more than one means a "
        "worker died while running it.")
    queue = models.CharField(max_length=200, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    parent_id = models.CharField(max_length=255, blank=True)
    root_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True,
                                help_text="The group (or chord header) the job belongs to.")
    date_created = models.DateTimeField(default=timezone.now)
    date_started = models.DateTimeField(null=True, blank=True)
    date_done = models.DateTimeField(null=True, blank=True)
    runtime = models.FloatField(null=True, blank=True, help_text="Seconds spent running.")

    objects = JobRecordQuerySet.as_manager()

    class Meta:
        # The table keeps the name it had when the model was called JobResult.
        db_table = "jobs_jobresult"
        verbose_name = "job result"
        ordering = ["-date_created"]
        # Every job writes its row twice: each index costs both writes (and the planner's
        # time on every query), so there are only the ones the reads need. The unique job id
        # is a constraint rather than ``unique=True``, which on PostgreSQL adds a second
        # index for LIKE queries that nothing here makes.
        constraints = [models.UniqueConstraint(fields=["job_id"], name="jobs_result_job_id")]
        indexes = [
            models.Index(fields=["-date_created"], name="jobs_result_created"),
            # state filters and counts, expiry of old results, finished-per-minute
            models.Index(fields=["state", "-date_done"], name="jobs_result_state_done"),
            models.Index(fields=["name", "-date_created"], name="jobs_result_name_created"),
            models.Index(fields=["parent_id"], name="jobs_result_parent"),
        ]

    def __str__(self) -> str:
        return f"{self.name or 'job'} {self.job_id} [{self.state}]"

    @property
    def is_ready(self) -> bool:
        return self.state in READY_STATES


class GroupRecord(models.Model):
    """A group of jobs started together (``group``, a chord's header), readable from any
    process (``GroupResult.restore(id)``). For a chord, it also holds the body and counts
    the header jobs that succeeded: the body is sent by the one that completes the count."""

    class BodyState(models.TextChoices):
        NONE = "", "No body (a group)"
        WAITING = "WAITING", "Waiting for the header"
        SENT = "SENT", "Body sent"
        FAILURE = "FAILURE", "Header failed"

    group_id = models.CharField("group id", max_length=255, unique=True)
    job_ids = models.JSONField(default=list, help_text="The members' job ids, in order.")
    size = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(
        default=0, help_text="Header jobs that succeeded (chords), each counted once.")
    body = models.JSONField(null=True, blank=True,
                            help_text="The chord's body: a signature in Celery's layout.")
    body_state = models.CharField(max_length=20, blank=True, default="",
                                  choices=BodyState.choices)
    parent_id = models.CharField(max_length=255, blank=True)
    root_id = models.CharField(max_length=255, blank=True)
    date_created = models.DateTimeField(default=timezone.now, db_index=True)
    date_done = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "job group"
        ordering = ["-date_created"]

    def __str__(self) -> str:
        kind = "chord" if self.body else "group"
        return f"{kind} {self.group_id} ({self.size} jobs)"

    @property
    def body_id(self) -> str | None:
        return ((self.body or {}).get("options") or {}).get("task_id")


class ChordPart(models.Model):
    """A header job of a chord that succeeded and was counted: the unique pair makes a
    redelivered header job (its worker died after counting) count once."""

    group_id = models.CharField("group id", max_length=255)
    job_id = models.CharField("job id", max_length=255)

    class Meta:
        verbose_name = "counted chord part"
        constraints = [models.UniqueConstraint(fields=["group_id", "job_id"],
                                               name="jobs_chordpart_once")]

    def __str__(self) -> str:
        return f"{self.job_id} of {self.group_id}"


class DeadLetterQuerySet(models.QuerySet):
    def older_than(self, age: timedelta, now=None):
        return self.filter(date_created__lt=(now or timezone.now()) - age)


class DeadLetter(models.Model):
    """A message no worker could run, kept whole with the reason, so nothing is lost."""

    queue = models.CharField(max_length=200, blank=True, db_index=True)
    job_id = models.CharField("job id", max_length=255, blank=True, db_index=True)
    job_name = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    content_type = models.CharField(max_length=100, blank=True)
    content_encoding = models.CharField(max_length=50, blank=True)
    headers = models.JSONField(null=True, blank=True)
    properties = models.JSONField(null=True, blank=True)
    body = models.BinaryField()
    worker = models.CharField(max_length=255, blank=True)
    date_created = models.DateTimeField(default=timezone.now, db_index=True)

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        verbose_name = "dead letter"
        ordering = ["-date_created"]

    def __str__(self) -> str:
        return f"{self.job_name or 'message'} {self.job_id}: {self.reason[:60]}"

    def requeue(self) -> None:
        """Send the message back to its queue as it was received, and forget this letter.

        For a job that was unregistered when it arrived, or a poison job that has been
        fixed. The retry count is kept; the start count of a poison job starts afresh.
        """
        from jobs.broker import publish_raw

        if self.job_id:
            JobRecord.objects.filter(job_id=self.job_id).update(deliveries=0)
        publish_raw(
            self.queue or "default", bytes(self.body), headers=self.headers or {},
            content_type=self.content_type, content_encoding=self.content_encoding,
            properties=self.properties or {},
        )
        self.delete()


def offline_after() -> timedelta:
    """A worker that missed this long of heartbeats is offline."""
    from jobs.conf import settings

    return timedelta(seconds=max(30.0, 3 * float(settings.WORKER_HEARTBEAT_INTERVAL)))


class WorkerQuerySet(models.QuerySet):
    def online(self, now=None):
        now = now or timezone.now()
        return self.filter(stopped_at=None, last_seen__gte=now - offline_after())

    def not_seen_since(self, when):
        """Workers last seen before ``when``: stopped then (a worker writes ``last_seen``
        as it stops), or gone without a word (killed, or its host lost)."""
        return self.filter(last_seen__lt=when)


class Worker(models.Model):
    """A worker process, recorded at start and refreshed by its heartbeat."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    pool = models.CharField(max_length=20)
    concurrency = models.PositiveIntegerField()
    broker = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    processed = models.PositiveBigIntegerField(default=0)
    active = models.PositiveIntegerField(default=0)
    stop_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="Set to ask the worker for a warm shutdown.")
    # A worker can't write while its database is out of reach: it writes the wait after.
    database_lost_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the worker last found its database unreachable and stopped taking jobs.")
    database_back_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the database answered again after that, and the worker resumed.")
    held = models.JSONField(
        default=dict, blank=True,
        help_text="Jobs the worker holds back now, waiting for their rate limit or their eta: "
                  "job name -> how many.")

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["hostname", "pid", "started_at"], name="jobs_worker_unique_process"
            )
        ]

    def __str__(self) -> str:
        return f"{self.hostname} (pid {self.pid})"

    @property
    def is_online(self) -> bool:
        return self.stopped_at is None and self.last_seen >= timezone.now() - offline_after()

    @property
    def database_wait(self) -> float | None:
        """Seconds the worker last waited for its database to answer, if it ever did."""
        if self.database_lost_at is None or self.database_back_at is None:
            return None
        return (self.database_back_at - self.database_lost_at).total_seconds()


class MessageQuerySet(models.QuerySet):
    def visible(self, now):
        return self.filter(visible_at__lte=now).filter(
            models.Q(lease_until__isnull=True) | models.Q(lease_until__lt=now)
        )


class Message(models.Model):
    """A message of the ``django://`` transport: one row per message in a queue.

    A consumer claims a row by setting a lease; ack deletes the row; a lease that runs out
    (the worker died) makes the row visible again. ``visible_at`` in the future holds a
    delayed message durably until it is due.
    """

    queue = models.CharField(max_length=200)
    priority = models.PositiveSmallIntegerField(default=0)
    payload = models.TextField()
    visible_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    delivery_tag = models.CharField(max_length=64, blank=True, db_index=True)
    delivery_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = MessageQuerySet.as_manager()

    class Meta:
        verbose_name = "queued message"
        indexes = [
            models.Index(
                fields=["queue", "-priority", "visible_at", "id"], name="jobs_message_claim"
            ),
            models.Index(fields=["lease_until"], name="jobs_message_lease"),
        ]

    def __str__(self) -> str:
        return f"message {self.pk} in {self.queue}"


class UniqueLockQuerySet(models.QuerySet):
    def expired(self, now=None):
        return self.filter(expires_at__lte=now or timezone.now())


class UniqueLock(models.Model):
    """Held while a ``@job(unique=True)`` call is queued or running (see jobs.unique).

    Released when the job ends; ``expires_at`` frees it anyway if the job never ends (its
    worker died and the message was lost), so a lock can't be held forever.
    """

    key = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the job name "
                           "and its unique key (the arguments, unless unique_key says otherwise).")
    name = models.CharField("job name", max_length=255)
    job_id = models.CharField("job id", max_length=255, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    objects = UniqueLockQuerySet.as_manager()

    class Meta:
        verbose_name = "unique job lock"

    def __str__(self) -> str:
        return f"{self.name} {self.job_id} (until {self.expires_at:%Y-%m-%d %H:%M:%S})"


class LeaseQuerySet(models.QuerySet):
    def claim(self, name: str, holder: str, until, now, *, due_only: bool = True) -> bool:
        """Take lease ``name`` for ``holder`` until ``until`` if no one holds it at ``now``
        (and, with ``due_only``, its work is due); True if taken. One compare-and-set
        UPDATE: however many processes claim at once, one matches. The row is made on
        first use."""
        free = models.Q(name=name) & (models.Q(held_until__isnull=True)
                                      | models.Q(held_until__lte=now))
        if due_only:
            free &= models.Q(due_at__lte=now)
        if self.filter(free).update(holder=holder, held_until=until):
            return True
        if self.filter(name=name).exists():
            return False
        self.bulk_create([self.model(name=name, due_at=now)], ignore_conflicts=True)
        return bool(self.filter(free).update(holder=holder, held_until=until))

    def renew(self, name: str, holder: str, until) -> bool:
        """Hold on until ``until``; False if ``holder`` has lost the lease."""
        return bool(self.filter(name=name, holder=holder).update(held_until=until))

    def release(self, name: str, holder: str, due_at) -> bool:
        """Let go of the lease; its work is next due at ``due_at``."""
        return bool(self.filter(name=name, holder=holder).update(
            holder="", held_until=None, due_at=due_at))


class Lease(models.Model):
    """Work that any process may do, one at a time, every so often (``housekeeping``:
    :mod:`jobs.housekeeping`). Whoever claims the row does the work; there is no leader."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=255, blank=True,
                              help_text="The process doing the work now (empty: none).")
    held_until = models.DateTimeField(
        null=True, blank=True, help_text="When the holder's claim runs out, should its "
        "process die before letting go.")
    due_at = models.DateTimeField(default=timezone.now,
                                  help_text="When the work is next due.")

    objects = LeaseQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({f'held by {self.holder}' if self.holder else 'free'})"


class ControlMessage(models.Model):
    """A command to the workers (``jobs_inspect``, ``jobs_control``), broadcast through the
    database where the broker has no fanout exchange (``django://``): every live worker reads
    the rows sent since its last look, and answers with a :class:`ControlReply`."""

    ticket = models.CharField(max_length=36, unique=True)
    command = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    destination = models.JSONField(
        null=True, blank=True, help_text="Worker names it is for; empty for every worker.")
    sent_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "control message"

    def __str__(self) -> str:
        return f"{self.command} {self.ticket}"


class ControlReply(models.Model):
    """One worker's answer to a :class:`ControlMessage` (removed with it by the sender)."""

    ticket = models.CharField(max_length=36, db_index=True)
    hostname = models.CharField(max_length=255)
    reply = models.JSONField(null=True, encoder=DjangoJSONEncoder)

    class Meta:
        verbose_name = "control reply"

    def __str__(self) -> str:
        return f"{self.hostname}: {self.ticket}"


class RateLimit(models.Model):
    """A job's rate limits as changed at run time (``jobs_control rate_limit`` or the admin),
    over the ones its code gives: every worker follows the row from the moment it is saved
    (told through the control channel) and reads the rows again when it starts. Deleting the
    row gives the job its own limits back."""

    name = models.CharField("job", max_length=255, unique=True)
    rate = models.CharField(
        "per worker", max_length=32, blank=True,
        help_text="Starts per second, minute or hour in each worker ('10/m'); 0: no limit; "
                  "empty: the job's own rate_limit.")
    global_rate = models.CharField(
        "across all workers", max_length=32, blank=True,
        help_text="Starts for the whole cluster ('100/m'); 0: no limit; empty: the job's own "
                  "global_rate_limit.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RateLimitTurn(models.Model):
    """When the next start of a job with a global rate limit may be, for the whole cluster
    (the database clock of :mod:`jobs.ratelimits`): each start given moves it on."""

    name = models.CharField(max_length=255, primary_key=True)
    last_at = models.FloatField(help_text="The time of the latest start given, in seconds since "
                                "the epoch.")

    def __str__(self) -> str:
        return self.name
