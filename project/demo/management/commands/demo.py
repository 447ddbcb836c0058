"""``manage.py demo``: migrate, an admin login, then a worker, the web server and the
scheduler of periodic jobs, together.

Ctrl-C (or SIGTERM) stops them all; if one dies, the others are stopped and the command fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

ADMIN_USERNAME = "admin"
#: Seconds the children get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 10.0
POLL = 0.2


@dataclass(frozen=True)
class Child:
    """A process the demo runs: a name for messages and its command line."""

    name: str
    argv: list[str]


def manage_py() -> list[str]:
    """The command line that runs this project's ``manage.py``, with this interpreter."""
    script = sys.argv[0]
    if script.endswith("__main__.py") or not os.path.isfile(script):  # python -m django
        return [sys.executable, "-m", "django"]
    return [sys.executable, os.path.abspath(script)]


def children(port: int, concurrency: int) -> list[Child]:
    """The processes of the demo, started in this order and stopped together."""
    manage = manage_py()
    return [
        Child("worker", [*manage, "jobs_worker", "-c", str(concurrency)]),
        Child("web server", [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]),
        Child("scheduler", [*manage, "jobs_beat"]),
    ]


def ensure_admin(username: str = ADMIN_USERNAME) -> str:
    """Create or update the superuser ``username`` with a new random password; return it."""
    User = get_user_model()
    user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None:
        user = User(**{User.USERNAME_FIELD: username})
    user.is_active = user.is_staff = user.is_superuser = True
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.save()
    return password


def wait_for_port(port: int, timeout: float = 15.0) -> bool:
    """Wait until something listens on 127.0.0.1:``port``; False if nothing did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=POLL).close()
            return True
        except OSError:
            time.sleep(POLL)
    return False


class Stop(Exception):
    """A signal asked the demo to stop."""


def _stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


class Supervisor:
    """Runs :class:`Child` processes until a signal arrives or one of them exits."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, children: list[Child], stop_timeout: float = STOP_TIMEOUT) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self.processes: dict[str, subprocess.Popen] = {}

    def run(self, on_start: Callable[[], None] = lambda: None) -> None:
        """Start the children and wait. Raises CommandError when one of them exits."""
        previous = {sig: signal.signal(sig, _stop) for sig in self.SIGNALS}
        try:
            self.start()
            on_start()
            name, code = self.wait()
        except (KeyboardInterrupt, Stop):
            return
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        raise CommandError(f"The {name} exited with code {code}; stopped the rest of the demo.")

    def start(self) -> None:
        for child in self.children:
            # A process group of its own: Ctrl-C reaches only us, and each child then gets
            # exactly one SIGTERM (a second one would make the worker leave without its jobs).
            self.processes[child.name] = subprocess.Popen(child.argv, process_group=0)

    def wait(self) -> tuple[str, int]:
        """Block until a child exits; return its name and exit code."""
        while True:
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    return name, code
            time.sleep(POLL)

    def stop(self) -> None:
        """SIGTERM every running child, wait for them, kill those still there."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        try:
            for process in running:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, KeyboardInterrupt, Stop):
            pass  # out of patience, or asked again: kill them
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()


class Command(BaseCommand):
    help = ("Run the demo: migrate, create an admin login, start a worker, the web server "
            "and the scheduler of periodic jobs.")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="Web server port.")
        parser.add_argument("-c", "--concurrency", type=int, default=2,
                            help="Jobs the worker runs at once.")

    def handle(self, *args, port: int, concurrency: int, **options):
        if not 0 < port < 65536:
            raise CommandError("--port must be 1..65535")
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        password = ensure_admin()
        Supervisor(children(port, concurrency)).run(
            on_start=lambda: self._welcome(port, password)
        )
        self.stdout.write("Demo stopped.")

    def _welcome(self, port: int, password: str) -> None:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(self.style.SUCCESS("\nThe demo is running.\n"))
        self.stdout.write(
            f"  Demo page:  {base}/\n"
            f"  Admin:      {base}/admin/\n"
            f"  Login:      {ADMIN_USERNAME}\n"
            f"  Password:   {password}\n\n"
            "Press Ctrl-C to stop.\n"
        )
        self.stdout.flush()
