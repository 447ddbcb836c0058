"""Adapters for the private names of the libraries jobs extends: :mod:`jobs.compat.kombu`
and :mod:`jobs.compat.django`. Each is the only module that spells those names, and each has
a contract test (``tests/test_kombu_contract.py``, ``tests/test_django_contract.py``) that
fails, naming the name, when a release of the library changes one."""
