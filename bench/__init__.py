"""Benchmarks of jobs against its peers (Celery, Dramatiq), run by hand: ``python bench/run.py``.

Nothing here is imported by the ``jobs`` apps; the peers are bench-only dependencies.
"""
