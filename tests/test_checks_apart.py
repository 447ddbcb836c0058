"""A command's system checks run in a forked child: the same report, the same refusal, and
what they import leaves with the child."""

import io
import os
import sys

import pytest
from django.core.management.base import BaseCommand, CommandError, SystemCheckError

from jobs.management.apart import check_apart

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")


class Command(BaseCommand):
    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        super().__init__(stdout=self.out, stderr=self.err)


def test_what_the_checks_write_is_written_by_the_command():
    cmd = Command()

    def check():
        cmd.stderr.write("System check identified some issues:\n\nWARNINGS:\nW1 careful")
        cmd.stdout.write("and a line on stdout")

    check_apart(cmd, check)

    assert cmd.err.getvalue() == "System check identified some issues:\n\nWARNINGS:\nW1 careful\n"
    assert cmd.out.getvalue() == "and a line on stdout\n"


def test_a_check_error_stops_the_command_with_the_checks_message():
    def check():
        raise SystemCheckError("SystemCheckError: E1 broken")

    with pytest.raises(SystemCheckError, match="^SystemCheckError: E1 broken$"):
        check_apart(Command(), check)


def test_an_exception_that_cannot_be_pickled_arrives_as_its_traceback():
    class Odd(Exception):
        def __reduce__(self):
            raise TypeError("not this one")

    def check():
        raise Odd("a check crashed")

    with pytest.raises(CommandError, match=r"(?s)Traceback.*Odd: a check crashed"):
        check_apart(Command(), check)


def test_the_checks_run_in_another_process_and_their_imports_stay_there():
    cmd = Command()
    assert "colorsys" not in sys.modules

    def check():
        import colorsys  # noqa: F401

        cmd.stdout.write(f"{os.getpid()} {'colorsys' in sys.modules}")

    check_apart(cmd, check)

    pid, imported = cmd.out.getvalue().split()
    assert (imported, pid != str(os.getpid())) == ("True", True)
    assert "colorsys" not in sys.modules
