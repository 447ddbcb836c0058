"""The app of the jobs the tests run, installed only for the tests (see project/settings.py)."""
