"""The jobs the benchmark runs with ``jobs``: a no-op, and ``mark`` that records when it ran."""

from bench import marks
from jobs import job


@job
def noop():
    return None


@job
def mark(key: str):
    marks.stamp(key)
