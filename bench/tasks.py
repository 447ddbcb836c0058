"""The jobs the benchmark runs with ``jobs``: a no-op, ``count`` (a chord's body), and ``mark``
that records when it ran."""

from bench import marks
from jobs import job


@job
def noop():
    return None


@job
def count(values):
    """A chord's body: how many results its header gave."""
    return len(values)


@job
def mark(key: str):
    marks.stamp(key)
