"""Signatures: a call of a job kept for later (``add.s(2, 2)``), in Celery's layout.

A signature is a ``dict`` (``task``, ``args``, ``kwargs``, ``options``, ``subtask_type``,
``immutable``), so it travels as JSON; workflows built of them are :mod:`jobs.canvas`. A
message carries what runs after it in its body's embed (``callbacks``, ``errbacks``,
``chain``, ``chord``): :func:`embed_of` makes that from the options of a call, and
:func:`send_step` sends one step of it (in the worker, :mod:`jobs.middleware.canvas`).
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["Signature", "maybe_signature", "signature", "subtask"]


class Signature(dict):
    """``add.s(2, 2)``: a call of a job, kept to be sent later or by a workflow."""

    TYPES: dict[str, type[Signature]] = {}

    def __init__(self, task=None, args=None, kwargs=None, options=None, subtask_type=None,
                 immutable=False, **more_options):
        if isinstance(task, dict):
            super().__init__(task)
            return
        super().__init__(task=getattr(task, "name", task), args=tuple(args or ()),
                         kwargs=dict(kwargs or {}), options={**(options or {}), **more_options},
                         subtask_type=subtask_type, immutable=bool(immutable))

    @classmethod
    def from_dict(cls, data: dict) -> Signature:
        """The signature (or chain, group, chord) a dict in Celery's layout describes."""
        if isinstance(data, Signature):
            return data
        kind = cls.TYPES.get(data.get("subtask_type") or "", Signature)
        return kind._from(dict(data))

    @classmethod
    def _from(cls, data: dict) -> Signature:
        made = cls.__new__(cls)
        dict.__init__(made, data)
        made.setdefault("args", ())
        made.setdefault("kwargs", {})
        made["options"] = dict(made.get("options") or {})
        made.setdefault("subtask_type", None)
        made.setdefault("immutable", False)
        return made

    # Celery's attribute names -------------------------------------------------------------

    task = property(lambda self: self.get("task"))
    name = task
    args = property(lambda self: tuple(self.get("args") or ()))
    kwargs = property(lambda self: dict(self.get("kwargs") or {}))
    options = property(lambda self: self["options"])
    subtask_type = property(lambda self: self.get("subtask_type"))
    immutable = property(lambda self: bool(self.get("immutable")))

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def type(self):
        """The job this signature calls (a stand-in that can only send, if its code is not
        in this process)."""
        from jobs.registry import registry

        return registry.by_name(self.task)

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    # Building ----------------------------------------------------------------------------

    def clone(self, args=None, kwargs=None, **options) -> Signature:
        """A copy, with ``args`` put before its own (unless immutable), ``kwargs`` and
        ``options`` added; the copy's links are copies too."""
        made = Signature.from_dict(_deep_copy(self))
        if not self.immutable:
            made["args"] = tuple(args or ()) + made.args
            made["kwargs"] = {**made.kwargs, **(kwargs or {})}
        made["options"].update(options)
        return made

    def set(self, immutable: bool | None = None, **options) -> Signature:
        """Change options (queue, countdown, priority, ...) in place; returns the signature."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this job's return value when it succeeds."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` with this job's id if it fails."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def freeze(self, _id: str | None = None, group_id: str | None = None):
        """Choose the job's id now (its handle is known before it is sent)."""
        from jobs.results import JobResult

        self.options.setdefault("task_id", _id or str(uuid.uuid4()))
        if group_id:
            self.options["group_id"] = group_id
        return JobResult(self.id, name=self.task)

    def __or__(self, other):
        from jobs.canvas import chain

        if isinstance(other, Signature):
            return chain(self, other)
        return NotImplemented

    # Running -----------------------------------------------------------------------------

    def delay(self, *args, **kwargs):
        return self.apply_async(args, kwargs)

    def apply_async(self, args=None, kwargs=None, **options):
        """Send the call (with ``args`` before its own); returns its JobResult."""
        if _eager():
            return self.apply(args, kwargs, **options)
        call = self.clone(args, kwargs, **options)
        return call.type.apply_async(call.args, call.kwargs, **call.options)

    def apply(self, args=None, kwargs=None, **options):
        """Run now, in this process, and then its links, as a worker would."""
        call = self.clone(args, kwargs, **options)
        result = call.type.apply(call.args, call.kwargs, **_eager_options(call.options))
        if result.successful():
            for callback in _as_list(call.options.get("link")):
                Signature.from_dict(callback).apply((result.result,))
        else:
            for errback in _as_list(call.options.get("link_error")):
                Signature.from_dict(errback).apply((result.id,))
        return result

    def __call__(self, *args, **kwargs):
        call = self.clone(args, kwargs)
        return call.type(*call.args, **call.kwargs)


def register(cls):
    """Make ``Signature.from_dict`` build ``cls`` for its ``subtask_type`` (its name)."""
    Signature.TYPES[cls.__name__] = cls
    return cls


def signature(varies, *args, **kwargs) -> Signature:
    """A signature from a job name (or job) and its call, or from a dict in Celery's layout."""
    if isinstance(varies, dict):
        return Signature.from_dict(varies)
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(value) -> Signature | None:
    return None if value is None else Signature.from_dict(value)


# The embed of a message ---------------------------------------------------------------------


def embed_of(options: dict) -> dict | None:
    """What a message built with ``options`` carries in its body's embed (Celery's layout),
    or None when that is nothing."""
    embed = dict(options.get("embed") or {})
    for key, option in (("callbacks", "link"), ("errbacks", "link_error")):
        added = [_plain(s) for s in _as_list(options.get(option))]
        if added:
            embed[key] = (embed.get(key) or []) + added
    if options.get("chain"):
        embed["chain"] = [_plain(s) for s in options["chain"]]
    if options.get("chord"):
        embed["chord"] = _plain(options["chord"])
    if not any(embed.values()):
        return None
    return {"callbacks": embed.get("callbacks"), "errbacks": embed.get("errbacks"),
            "chain": embed.get("chain"), "chord": embed.get("chord")}


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


def _plain(value) -> dict:
    """A signature as plain data (what JSON writes of it), checked to be one."""
    if not isinstance(value, dict):
        raise TypeError(f"a workflow step must be a signature (add.s(...)), not "
                        f"{type(value).__name__}")
    return _deep_copy(value)


def _deep_copy(value: Any):
    """Plain dicts, lists and tuples all the way down: signatures inside a signature (links,
    a chain's steps) are copied, not shared."""
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_deep_copy(item) for item in value) if isinstance(value, tuple) \
            else [_deep_copy(item) for item in value]
    return value


def _eager() -> bool:
    from jobs.conf import settings

    return settings.ALWAYS_EAGER


def _eager_options(options: dict) -> dict:
    from jobs.options import APPLY_OPTIONS, EMBED_OPTIONS

    return {k: v for k, v in options.items() if k in APPLY_OPTIONS and k not in EMBED_OPTIONS}


def check_step(step: Signature) -> None:
    """Raise TypeError for a step of a workflow that could never be sent (an unknown
    option): at the call that sends the workflow, not in a worker after the step before."""
    from jobs.options import APPLY_OPTIONS

    for part in step.get("kwargs", {}).get("tasks") or ():
        check_step(Signature.from_dict(part))
    unknown = set(step.options) - APPLY_OPTIONS
    if unknown and not step.subtask_type:
        raise TypeError(f"{step!r}: unknown option(s) {', '.join(sorted(unknown))}")
    for linked in _as_list(step.options.get("link")) + _as_list(step.options.get("link_error")):
        check_step(Signature.from_dict(linked))


def send_step(step: dict, args: tuple = (), **options):
    """Send a step a message carried (a link, the next step of a chain, a chord's body),
    with ``args`` before its own. Options that aren't ours (a Celery producer adds some,
    e.g. ``reply_to``) are left out."""
    from jobs.options import APPLY_OPTIONS

    made = Signature.from_dict(_deep_copy(step))
    made["options"] = {k: v for k, v in made.options.items() if k in APPLY_OPTIONS}
    return made.apply_async(args, **options)
