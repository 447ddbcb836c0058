"""Workflows: what runs after a job (``link``, ``link_error``, chains, chords).

A message carries them in its body's embed, where Celery puts them (``callbacks``,
``errbacks``, ``chain``, ``chord``), so messages of a Celery producer are followed here and
ours on a Celery worker. A job whose message carries none costs this middleware one check.

After a success (recorded by ``Results``, which this one wraps): the callbacks are sent
with the job's value, then the chain's next step with the rest of the chain, and a chord's
header job is counted (:mod:`jobs.chords`). This is a steering hook: if sending fails, the
message is handed back and the job runs again, as Celery does. After a failure: the
errbacks are sent with the job's id and a chord fails; after a revocation, the rest of the
chain is revoked too and a chord fails.
"""

from __future__ import annotations

from jobs import chords
from jobs.middleware import Middleware
from jobs.outcome import Kind
from jobs.signatures import send_step


class Canvas(Middleware):
    def execute(self, execution, call_next):
        outcome = call_next(execution)
        message = execution.message
        if message.embed is not None and outcome.kind is Kind.SUCCEEDED:
            succeeded(message, outcome.value)
        return outcome

    def finished(self, execution, outcome):
        message = execution.message
        if message.embed is None:
            return
        if outcome.kind is Kind.FAILED:
            failed(message, outcome.reason, execution.hostname)
        elif outcome.kind is Kind.REVOKED:
            revoked(message, outcome.reason, execution.hostname)


def _after(message) -> dict:
    return {"parent_id": message.id, "root_id": message.root_id or message.id}


def succeeded(message, value) -> None:
    embed, after = message.embed, _after(message)
    for callback in embed["callbacks"] or ():
        send_step(callback, (value,), **after)
    chain = embed["chain"]
    if chain:
        send_step(chain[-1], (value,), chain=chain[:-1], **after)
    if embed["chord"] and message.group_id:
        chords.part_succeeded(message)


def failed(message, reason: str, hostname: str) -> None:
    embed = message.embed
    for errback in embed["errbacks"] or ():
        send_step(errback, (message.id,), **_after(message))
    if embed["chord"] and message.group_id:
        chords.part_failed(message, f"raised {reason}", hostname)


def revoked(message, reason: str, hostname: str) -> None:
    from jobs.lifecycle import revoke_request

    for step in message.embed["chain"] or ():
        step_id = (step.get("options") or {}).get("task_id")
        if step_id:
            revoke_request(step_id, step.get("task") or "",
                           reason=f"the chain stopped: {message.id} was revoked")
    if message.embed["chord"] and message.group_id:
        chords.part_failed(message, f"was revoked ({reason})", hostname)
