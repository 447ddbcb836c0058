"""The README's "Use it in your project", followed in fresh virtualenvs, one per broker.

Each virtualenv holds the project installed as a user installs it (not editable, with only the
broker's extra: no test dependencies that could hide a missing one) and a new Django project
with a job; a real worker runs it. The three virtualenvs are built at the same time, sharing
pip's cache, while the tests run one after another.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, require, wait_for

pytestmark = pytest.mark.e2e

#: This module's own place on each broker: Redis database 14 under a key prefix of this run,
#: and a RabbitMQ virtual host of this run, so that no other test, nor another run, shares it.
RUN = f"jobs-install-{os.getpid()}"
REDIS_URL = "redis://127.0.0.1:6379/14"

#: broker -> (the extra installed, the service it needs, the JOBS setting; None: no JOBS).
BROKERS = {
    "redis": ("redis", "redis", {"BROKER_URL": REDIS_URL,
                                 "BROKER_TRANSPORT_OPTIONS": {"global_keyprefix": f"{RUN}:"}}),
    "amqp": ("amqp", "rabbitmq", {"BROKER_URL": f"amqp://guest:guest@127.0.0.1:5672/{RUN}"}),
    "django": (None, None, None),  # "or leave JOBS out: the database is the broker"
}

JOBS_PY = '''\
from jobs import job


@job
def add(x, y):
    return x + y
'''

ENQUEUE = ("from jobs import JobResult; from shop.jobs import add; "
           "print(JobResult(add.delay(2, 3).id).get(timeout=30))")


def run(*command, cwd: Path, env: dict | None = None, timeout: float = 120) -> str:
    """Run a command to its end; fail the test with its output unless it succeeds."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def build_wheel(into: Path) -> Path:
    """The project's wheel, built from a copy of the checkout (the build leaves its files in
    the source tree, and two runs at once must not share them)."""
    source = into / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("jobs", "jobs_beat"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(into),
        cwd=into)
    (wheel,) = into.glob("*.whl")
    return wheel


def make_virtualenv(wheel: Path, extra: str | None, path: Path) -> Path:
    """A virtualenv with nothing but the project and its dependencies (no pip or setuptools
    either: this process's pip installs into it). Returns its bin directory."""
    run(sys.executable, "-m", "venv", "--without-pip", str(path), cwd=path.parent)
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    run(sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install", "-q",
        requirement, cwd=path.parent, timeout=300)
    return path / "bin"


@pytest.fixture(scope="module")
def virtualenvs(tmp_path_factory):
    """broker -> a Future of its virtualenv's bin directory; all three are built at once."""
    root = tmp_path_factory.mktemp("install")
    wheel = build_wheel(root)
    with ThreadPoolExecutor(max_workers=len(BROKERS)) as pool:
        futures = {name: pool.submit(make_virtualenv, wheel, extra, root / f"venv-{name}")
                   for name, (extra, _, _) in BROKERS.items()}
        yield futures
    shutil.rmtree(root, ignore_errors=True)  # ~100 MB a virtualenv


@pytest.fixture
def broker_place(request):
    """Make the broker's place for this run, and remove it and what was left in it after."""
    name = request.param
    service = BROKERS[name][1]
    if service:
        require(service)
    if name == "amqp":
        rabbitmqctl("add_vhost", RUN)
        rabbitmqctl("set_permissions", "-p", RUN, "guest", ".*", ".*", ".*")
    yield name
    if name == "amqp":
        rabbitmqctl("delete_vhost", RUN)
    if name == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{RUN}:*", count=1000))
        if keys:
            client.delete(*keys)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, check=True, timeout=60)


def new_project(bin_dir: Path, where: Path, jobs_setting: dict | None) -> tuple[Path, dict]:
    """``django-admin startproject``, an app with a job, the two apps and JOBS in the settings.
    Returns the project's directory and the environment to run its commands in."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               VIRTUAL_ENV=str(bin_dir.parent))
    where.mkdir()
    run(bin_dir / "django-admin", "startproject", "mysite", ".", cwd=where, env=env)
    run(bin_dir / "python", "manage.py", "startapp", "shop", cwd=where, env=env)
    (where / "shop" / "jobs.py").write_text(JOBS_PY)
    settings = ['INSTALLED_APPS += ["shop", "jobs", "jobs_beat"]']
    if jobs_setting is not None:
        settings.append(f"JOBS = {jobs_setting!r}")
    with open(where / "mysite" / "settings.py", "a") as file:
        file.write("\n" + "\n".join(settings) + "\n")
    return where, env


class Worker:
    """``manage.py jobs_worker`` as the README starts it, in its own process group."""

    def __init__(self, bin_dir: Path, project: Path, env: dict) -> None:
        self.log = project / "worker.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [bin_dir / "python", "manage.py", "jobs_worker", "-Q", "default,emails", "-c", "4"],
                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def consuming() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}")
            return "consuming from" in self.output

        try:
            wait_for(consuming, timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"the worker did not start ({exc}):\n{self.output}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # a warm shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left: pool processes
        except ProcessLookupError:
            pass
        self.process.wait(10)


@pytest.mark.parametrize("broker_place", list(BROKERS), indirect=True)
def test_the_readme_steps_run_a_job_with_only_the_brokers_extra(
        broker_place, virtualenvs: dict[str, Future], tmp_path):
    bin_dir = virtualenvs[broker_place].result(timeout=240)
    project, env = new_project(bin_dir, tmp_path / "mysite", BROKERS[broker_place][2])

    run(bin_dir / "python", "manage.py", "migrate", cwd=project, env=env)
    checked = run(bin_dir / "python", "manage.py", "check", cwd=project, env=env)
    assert "System check identified no issues" in checked

    worker = Worker(bin_dir, project, env)
    try:
        worker.wait_ready()
        result = run(bin_dir / "python", "manage.py", "shell", "-c", ENQUEUE, cwd=project, env=env,
                     timeout=60)
        assert result.splitlines()[-1] == "5", worker.output  # after the shell's banner
    finally:
        worker.stop()
