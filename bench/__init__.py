"""Benchmarks of jobs against its peers (Celery, Dramatiq, Huey, django-tasks-db, and each
broker's raw client), run by hand: ``python bench/run.py``.

Nothing here is imported by the ``jobs`` apps; the peers are bench-only dependencies.
"""
