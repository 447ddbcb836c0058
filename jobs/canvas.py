"""Workflows: ``chain``, ``group``, ``chord``, ``chunks``, ``xmap`` and ``xstarmap``.

Built of signatures (:mod:`jobs.signatures`), with Celery's names and behaviour. A message
carries what runs after it where Celery's protocol v2 puts it: the body's embed
(``callbacks``, ``errbacks``, ``chain``, ``chord``) and the ``group``/``group_index``
headers. The worker follows them in :mod:`jobs.middleware.canvas`; the chord's counting is
:mod:`jobs.chords`.

Every id of a workflow is chosen when it is sent (as Celery does), so its handles are known
at once and revoking one part stops the chain there.
"""

from __future__ import annotations

import uuid
from itertools import islice

from jobs.exceptions import ChordError
from jobs.job import job
from jobs.signatures import (
    Signature,
    _as_list,
    _deep_copy,
    _eager,
    _plain,
    check_step,
    maybe_signature,
    register,
    signature,
)

__all__ = ["Signature", "chain", "chord", "chunks", "group", "signature", "xmap", "xstarmap"]


# Chains ------------------------------------------------------------------------------------


class _Tasks(Signature):
    """A signature whose ``kwargs["tasks"]`` are signatures: a chain's steps, a group's
    members."""

    @classmethod
    def _from(cls, data):
        made = super()._from(data)
        made["kwargs"] = {**made["kwargs"],
                          "tasks": [Signature.from_dict(t) for t in made["kwargs"]["tasks"]]}
        return made

    @property
    def tasks(self) -> list[Signature]:
        return self["kwargs"]["tasks"]


@register
class chain(_Tasks):  # noqa: N801 - Celery's name
    """``chain(a.s(), b.s(), c.s())`` or ``a.s() | b.s() | c.s()``: each job's result is put
    before the next one's arguments. A failure stops the chain (running its ``link_error``);
    so does revoking a part that hasn't run."""

    def __init__(self, *tasks, **options):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        steps = []
        for task in map(Signature.from_dict, tasks):
            steps.extend(task.tasks if isinstance(task, chain) else [task])
        super().__init__("celery.chain", (), {"tasks": steps}, options, subtask_type="chain")

    def __or__(self, other):
        if isinstance(other, Signature):
            return chain(*self.tasks, other, **self.options)
        return NotImplemented

    def clone(self, args=None, kwargs=None, **options) -> chain:
        made = Signature.from_dict(_deep_copy(self))
        if args and made.tasks:
            made.tasks[0] = made.tasks[0].clone(args)
        made.options.update(options)
        return made

    def freeze(self, _id=None, group_id=None):
        """Choose every step's id now; the last step's handle (``_id``, ``group_id``: its
        own), whose ``parent`` is the step before it, and so on."""
        steps = self["kwargs"]["tasks"] = _steps(self.tasks)
        if not steps:
            raise ValueError("chain() needs at least one job")
        if _id:
            steps[-1].options["task_id"] = _id
        if group_id:
            steps[-1].options["group_id"] = group_id
        handles = [step.freeze() for step in steps]
        for before, after in zip(handles, handles[1:], strict=False):
            after.parent = before
        return handles[-1]

    def apply_async(self, args=None, kwargs=None, **options):
        """Send the first step; each step sends the next when it succeeds. Returns the last
        step's handle, whose ``parent`` is the step before it.

        As a member of a group (or a chord's header) it is its last step that belongs to the
        group: ``group_id``, ``group_index`` and ``chord`` go to that one."""
        if _eager():
            return self.apply(args, kwargs, **options)
        made = self.clone(args)
        options = {**made.options, **options}
        handle = made.freeze(options.pop("task_id", None))
        steps = made.tasks
        for step in steps[1:]:
            check_step(step)
        last = steps[-1].options
        for key in ("group_id", "group_index", "chord"):
            if key in options:
                last[key] = options.pop(key)
        link, link_error = _as_list(options.pop("link", None)), _as_list(
            options.pop("link_error", None))
        root_id = options.get("root_id") or steps[0].id or handle.id
        for position, step in enumerate(steps):
            if link_error:
                step.options["link_error"] = _as_list(step.options.get("link_error")) + link_error
            if position and steps[position - 1].id:
                step.options.setdefault("parent_id", steps[position - 1].id)
            step.options.setdefault("root_id", root_id)
        if link:
            last["link"] = _as_list(last.get("link")) + link
        if steps[1:]:
            options["chain"] = [_plain(step) for step in reversed(steps[1:])]
        steps[0].apply_async(**options)
        return handle

    def apply(self, args=None, kwargs=None, **options):
        """Run the steps one after the other in this process; a failure stops them."""
        options = {**self.options, **options}
        link_error = _as_list(options.pop("link_error", None))
        link = _as_list(options.pop("link", None))
        steps = self.clone(args).tasks
        result = None
        for position, step in enumerate(steps):
            extra = {"link_error": link_error} if link_error else {}
            if link and position == len(steps) - 1:
                extra["link"] = link
            if position:
                result = step.apply((result.get(),), **extra, **options)
            else:
                result = step.apply(**extra, **options)
            if not result.successful():
                break
        return result

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)


def _steps(tasks: list[Signature]) -> list[Signature]:
    """The chain's steps, a group followed by a step made the chord it means."""
    steps: list[Signature] = []
    for task in tasks:
        if steps and isinstance(steps[-1], group) and not isinstance(task, group):
            steps[-1] = chord(steps[-1], task)
        else:
            steps.append(task)
    return steps


# Groups ------------------------------------------------------------------------------------


@register
class group(_Tasks):  # noqa: N801 - Celery's name
    """``group(add.s(i, i) for i in range(10))``: jobs run in parallel; ``apply_async()``
    returns a :class:`jobs.groups.GroupResult`, stored, so any process can ``restore`` it."""

    def __init__(self, *tasks, **options):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        super().__init__("celery.group", (), {"tasks": [Signature.from_dict(t) for t in tasks]},
                         options, subtask_type="group")

    def __len__(self) -> int:
        return len(self.tasks)

    def clone(self, args=None, kwargs=None, **options) -> group:
        made = Signature.from_dict(_deep_copy(self))
        made["kwargs"]["tasks"] = [t.clone(args, kwargs) for t in made.tasks]
        made.options.update(options)
        return made

    def freeze(self, _id=None, group_id=None):
        from jobs.groups import GroupResult

        self.options.setdefault("task_id", _id or group_id or str(uuid.uuid4()))
        return GroupResult(self.id, [t.freeze(group_id=self.id) for t in self.tasks])

    def apply_async(self, args=None, kwargs=None, body: Signature | None = None, **options):
        """Store the group, then send its jobs; returns its GroupResult."""
        from jobs.groups import save_group

        if _eager():
            return self.apply(args, kwargs, **options)
        made = self.clone(args, kwargs)
        if body is not None and any(isinstance(task, (group, chord)) for task in made.tasks):
            raise TypeError("a chord's header takes jobs and chains, not groups or chords")
        options = {**made.options, **options}
        options.pop("chain", None)  # a group ends a chain; with a step after, it is a chord
        group_id, frozen = options.pop("group_id", None), options.pop("task_id", None)
        group_id = group_id or frozen or made.id
        made.options.pop("task_id", None)
        result = made.freeze(group_id=group_id)
        save_group(result, body=body, parent_id=options.get("parent_id"),
                   root_id=options.get("root_id"))
        if body is not None:
            options["chord"] = _plain(body)
        for index, task in enumerate(made.tasks):
            task.apply_async(group_id=result.id, group_index=index, **options)
        return result

    def apply(self, args=None, kwargs=None, **options):
        from jobs.groups import GroupResult

        made = self.clone(args, kwargs)
        return GroupResult(made.id or str(uuid.uuid4()),
                           [task.apply(**options) for task in made.tasks])

    def __call__(self, *args, **kwargs):
        return self.apply_async(args, kwargs)


# Chords ------------------------------------------------------------------------------------


@register
class chord(Signature):  # noqa: N801 - Celery's name
    """``chord(header, body)``: the body runs once every job of the header group has
    succeeded, with their results in order. A header job that fails fails the chord with a
    :class:`jobs.exceptions.ChordError` naming it, and runs the body's ``link_error``."""

    def __init__(self, header, body=None, **options):
        header = header if isinstance(header, group) else group(header)
        super().__init__("celery.chord", (), {
            "header": header, "body": Signature.from_dict(body) if body is not None else None,
        }, options, subtask_type="chord")

    @classmethod
    def _from(cls, data):
        made = super()._from(data)
        kwargs = made["kwargs"]
        made["kwargs"] = {**kwargs, "header": Signature.from_dict(kwargs["header"]),
                          "body": maybe_signature(kwargs.get("body"))}
        return made

    header = property(lambda self: self["kwargs"]["header"])
    body = property(lambda self: self["kwargs"]["body"])

    def clone(self, args=None, kwargs=None, **options) -> chord:
        made = Signature.from_dict(_deep_copy(self))
        made["kwargs"]["header"] = made.header.clone(args, kwargs)
        made.options.update(options)
        return made

    def freeze(self, _id=None, group_id=None):
        return self.body.freeze(_id)

    def apply_async(self, args=None, kwargs=None, body=None, **options):
        """Send the header with the body attached; returns the body's handle, whose
        ``parent`` is the header's GroupResult."""
        made = self.clone(args, kwargs)
        body = Signature.from_dict(body) if body is not None else made.body
        if body is None:
            raise ValueError("chord() needs a body: chord(header, body) or chord(header)(body)")
        if _eager():
            made["kwargs"]["body"] = body
            return made.apply(**options)
        options = {**made.options, **options}
        body = body.clone()
        check_step(body)
        for key in ("link", "link_error"):
            if key in options:
                body.options[key] = _as_list(body.options.get(key)) + _as_list(options.pop(key))
        if "chain" in options:
            body.options["chain"] = options.pop("chain")
        handle = body.freeze(options.pop("task_id", None))
        body.options.setdefault("root_id", options.get("root_id") or handle.id)
        if not made.header.tasks:  # nothing to wait for
            body.apply_async(([],))
            return handle
        handle.parent = made.header.apply_async(body=body, **options)
        return handle

    def apply(self, args=None, kwargs=None, **options):
        made = self.clone(args, kwargs)
        header = made.header.apply(**options)
        failed = next((r for r in header if not r.successful()), None)
        if failed is None:
            return made.body.apply((header.get(),), **options)
        from jobs.models import States
        from jobs.results import EagerResult

        body = made.body
        error = ChordError(f"Dependency {failed.id} ({failed.name}) raised {failed.result!r}")
        for errback in _as_list(body.options.get("link_error")):
            Signature.from_dict(errback).apply((body.id,))
        return EagerResult(body.id or str(uuid.uuid4()), body.task, States.FAILURE, error)

    def __call__(self, body=None, **options):
        return self.apply_async(body=body, **options)


# Maps and chunks ----------------------------------------------------------------------------


@job(name="celery.map", typing=False)
def _map(task, it):
    """``add.map(items)``: the job once per item, in one job (Celery's ``celery.map``)."""
    run = Signature.from_dict(task)
    return [run(item) for item in it]


@job(name="celery.starmap", typing=False)
def _starmap(task, it):
    """``add.starmap(pairs)``: the job once per tuple of arguments, in one job."""
    run = Signature.from_dict(task)
    return [run(*item) for item in it]


def xmap(task: Signature, it) -> Signature:
    return Signature("celery.map", (), {"task": Signature.from_dict(task), "it": list(it)},
                     immutable=True)


def xstarmap(task: Signature, it) -> Signature:
    return Signature("celery.starmap", (), {"task": Signature.from_dict(task),
                                            "it": [list(item) for item in it]}, immutable=True)


@register
class chunks(Signature):  # noqa: N801 - Celery's name
    """``chunks(add.s(), pairs, 10)``: the calls split into jobs of ten calls each, run as a
    group; each chunk's result is the list of its calls' results."""

    def __init__(self, task, it, n, **options):
        super().__init__("celery.chunks", (), {"task": Signature.from_dict(task),
                                               "it": [list(item) for item in it], "n": int(n)},
                         options, subtask_type="chunks")
        if self["kwargs"]["n"] < 1:
            raise ValueError("chunks(): n must be at least 1")

    def group(self) -> group:
        task, items, n = self.kwargs["task"], iter(self.kwargs["it"]), self.kwargs["n"]
        parts = []
        while part := list(islice(items, n)):
            parts.append(xstarmap(task, part))
        return group(parts, **self.options)

    def apply_async(self, args=None, kwargs=None, **options):
        return self.group().apply_async(**options)

    def apply(self, args=None, kwargs=None, **options):
        return self.group().apply(**options)

    def __call__(self, **options):
        return self.apply_async(**options)
