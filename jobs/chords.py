"""Chords: count the header's jobs as they succeed, and send the body once.

Each header job that succeeds inserts a (group, job) row under a unique constraint and, only
if that insert was new, adds one to the group's counter: a header job whose worker died
after counting runs again (at-least-once), finds its row, and doesn't count twice; once the
count is over (the body sent, or the chord failed) those rows are gone, and the body's state
says so instead. The job
that completes the count marks the body SENT and sends it with the header's results in
order, in the same transaction: if sending fails, or its worker dies first, nothing of it
is kept, and the job's message, delivered again, does it all again. Nothing polls.

A header job that fails (or is revoked) fails the chord once: the body's row says FAILURE
with a :class:`~jobs.exceptions.ChordError` naming the job, and the body's ``link_error``
run.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, router, transaction
from django.db.models import F
from django.utils import timezone

from jobs import lifecycle
from jobs.exceptions import ChordError
from jobs.messages import JobMessage
from jobs.models import ChordPart, GroupRecord, JobRecord
from jobs.signatures import Signature, send_step

logger = logging.getLogger("jobs.worker")

WAITING, SENT, FAILURE = (GroupRecord.BodyState.WAITING, GroupRecord.BodyState.SENT,
                          GroupRecord.BodyState.FAILURE)


def part_succeeded(message: JobMessage) -> None:
    """Count header job ``message`` (once); the last one sends the body."""
    group_id = message.group_id
    db = router.db_for_write(GroupRecord)
    with transaction.atomic(using=db):
        rows = GroupRecord.objects.using(db).filter(group_id=group_id)
        state = rows.values_list("body_state", flat=True).first()
        if state is None:
            _unknown(message)
            return
        if state != WAITING:
            # The count is over (the body went, or the chord failed) and its guard rows with
            # it: this is a header job run again, its worker having died before
            # acknowledging it. It counted before; it must not count again.
            return
        if _count_once(group_id, message.id, db):
            rows.filter(body_state=WAITING).update(done=F("done") + 1)
        record = rows.only("group_id", "job_ids", "size", "done", "body", "body_state",
                           "root_id").first()
        if record.done < record.size or record.body_state != WAITING:
            return
        if not rows.filter(body_state=WAITING).update(body_state=SENT, date_done=timezone.now()):
            return
        _forget_parts(group_id, db)
        send_step(record.body, (results(record.job_ids),), parent_id=message.id,
                  root_id=record.root_id or message.root_id or message.id, on_commit=False)


def _count_once(group_id: str, job_id: str, db: str) -> bool:
    try:
        with transaction.atomic(using=db):  # a savepoint: a duplicate must not spoil the rest
            ChordPart.objects.using(db).create(group_id=group_id, job_id=job_id)
    except IntegrityError:
        return False
    return True


def _forget_parts(group_id: str, db: str) -> None:
    """The count is over (the body state says so from now on): its guard rows can go."""
    ChordPart.objects.using(db).filter(group_id=group_id).delete()


def results(job_ids: list[str]) -> list:
    """The header jobs' results, in the header's order."""
    found = dict(JobRecord.objects.filter(job_id__in=job_ids).order_by()
                 .values_list("job_id", "result"))
    return [found.get(job_id) for job_id in job_ids]


def part_failed(message: JobMessage, reason: str, hostname: str = "") -> None:
    """Header job ``message`` failed or was revoked: fail the chord, once."""
    rows = GroupRecord.objects.filter(group_id=message.group_id, body_state=WAITING)
    record = rows.only("group_id", "body", "root_id").first()
    if record is None or not rows.update(body_state=FAILURE, date_done=timezone.now()):
        return
    _forget_parts(message.group_id, router.db_for_write(ChordPart))
    body = Signature.from_dict(record.body)
    error = ChordError(f"Dependency {message.id} ({message.name}) {reason}")
    root_id = record.root_id or message.root_id or message.id
    lifecycle.mark_failed(
        JobMessage(id=body.id, name=body.task, args=body.args, kwargs=body.kwargs,
                   queue=body.options.get("queue") or "", parent_id=message.id,
                   root_id=root_id),
        error, "", None, hostname, started=False)
    logger.error("Chord %s failed: %s", message.group_id, error, extra={"job_id": body.id})
    for errback in body.options.get("link_error") or ():
        send_step(errback, (body.id,), parent_id=body.id, root_id=root_id)


def _unknown(message: JobMessage) -> None:
    logger.error(
        "Job %s[%s] belongs to chord %s, which this project has not stored (sent by another "
        "producer?): its body is not sent", message.name, message.id, message.group_id,
        extra={"job_id": message.id})
