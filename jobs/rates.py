"""Rates as Celery writes them: ``"10/s"``, ``"100/m"``, ``"1000/h"``, or a number (per
second). The one parser of every rate limit: ``@job``, the settings, ``jobs_control`` and the
admin all check a rate here, so a malformed one is refused where it is given."""

from __future__ import annotations

import re

PATTERN = re.compile(r"^\d+(\.\d+)?(/[smh])?$")
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
FORMAT = "'10/s', '100/m' or '1000/h'"


def problem(rate) -> str | None:
    """Why ``rate`` is not a rate, or None if it is one (None and 0 mean: no limit)."""
    if rate is None or isinstance(rate, bool):
        return None if rate is None else f"{rate!r} is not a rate"
    if not PATTERN.match(str(rate).strip()):
        return f"{rate!r} is not a rate; write it as {FORMAT}"
    return None


def per_second(rate) -> float:
    """Starts per second; 0.0 for no limit (None, 0, ``"0/m"``). ValueError if malformed."""
    if rate is None:
        return 0.0
    reason = problem(rate)
    if reason:
        raise ValueError(reason)
    count, _, unit = str(rate).strip().partition("/")
    return float(count) / UNITS[unit or "s"]


def interval(rate) -> float | None:
    """Seconds between two starts at ``rate``; None for no limit."""
    starts = per_second(rate)
    return 1.0 / starts if starts else None
