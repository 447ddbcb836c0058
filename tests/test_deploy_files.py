"""The deployment files of docs/deploy/ are checked as far as can be without systemd running,
supervisor or docker: they parse, their commands parse with the commands' own parsers, and
their stop timeouts outlast the worker's warm shutdown."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "docs" / "deploy"


def manage_py_args(command: str | list[str]) -> list[str]:
    """The arguments after ``manage.py`` in a command line."""
    words = shlex.split(command) if isinstance(command, str) else command
    return words[words.index("manage.py") + 1:]


def parse_command(args: list[str]):
    """Parse ``args`` (``jobs_worker -c 4 ...``) as that management command would."""
    from django.core.management import load_command_class

    app = {"jobs_worker": "jobs", "jobs_beat": "jobs_beat", "migrate": "django.core"}[args[0]]
    parser = load_command_class(app, args[0]).create_parser("manage.py", args[0])
    return parser.parse_args(args[1:])


def shutdown_timeout(args: list[str]) -> float:
    from jobs.conf import DEFAULTS

    options = parse_command(args)
    return options.shutdown_timeout or DEFAULTS["WORKER_SHUTDOWN_TIMEOUT"]


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


# systemd ------------------------------------------------------------------------------------


def test_the_worker_unit_notifies_systemd_restarts_and_outlasts_the_warm_shutdown():
    service = unit("jobs-worker@.service")["Service"]
    args = manage_py_args(service["ExecStart"])

    assert args[0] == "jobs_worker"
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert seconds(service["WatchdogSec"]) > 0
    assert (service["KillSignal"], service["KillMode"]) == ("SIGTERM", "mixed")
    assert service["Restart"] == "always"
    assert seconds(service["TimeoutStopSec"]) > shutdown_timeout(args)


def test_the_scheduler_unit_runs_jobs_beat_and_restarts():
    service = unit("jobs-beat.service")["Service"]

    parse_command(manage_py_args(service["ExecStart"]))
    assert manage_py_args(service["ExecStart"])[0] == "jobs_beat"
    assert service["Restart"] == "always"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["jobs-worker@.service", "jobs-beat.service"])
def test_systemd_finds_nothing_wrong_in_the_units(name, tmp_path):
    path = tmp_path / name.replace("@", "@1")  # an instance of the template
    path.write_text((DEPLOY / name).read_text())
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line and "is not executable" not in line]  # /srv/app is not here
    assert complaints == []


# supervisor ---------------------------------------------------------------------------------


def supervisor() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read_string((DEPLOY / "supervisor.conf").read_text())
    return parser


def test_the_supervisor_workers_are_several_named_apart_and_stop_warmly():
    program = supervisor()["program:jobs-worker"]
    command = program["command"].replace("%(process_num)d", "1").replace(
        "%(host_node_name)s", "host")
    args = manage_py_args(command)

    options = parse_command(args)
    assert int(program["numprocs"]) > 1
    assert "%(process_num)d" in program["process_name"]
    assert "%(process_num)d" in program["command"].split("-n", 1)[1].split()[0]  # own name
    assert options.logfile and "%(process_num)d" in program["command"].split("--logfile")[1]
    assert (program["stopsignal"], program["autorestart"]) == ("TERM", "true")
    assert program["killasgroup"] == "true"
    assert int(program["stopwaitsecs"]) > shutdown_timeout(args)


def test_the_supervisor_scheduler_runs_jobs_beat():
    program = supervisor()["program:jobs-beat"]
    assert manage_py_args(program["command"])[0] == "jobs_beat"
    parse_command(manage_py_args(program["command"]))


def test_logrotate_signals_the_workers_it_rotates_the_logs_of():
    text = (DEPLOY / "logrotate").read_text()
    assert "/var/log/jobs/worker-*.log" in text
    assert "supervisorctl signal HUP 'jobs-worker:*'" in text


# Docker -------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_the_dockerfile_copies_files_that_exist_and_runs_as_a_user():
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "EXPOSE", "CMD"}
    instructions = dockerfile()

    assert {name for name, _ in instructions} <= known
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    for name, args in instructions:
        if name == "COPY":
            *sources, _ = args.split()
            assert [s for s in sources if not (ROOT / s).exists()] == []
    assert [args for name, args in instructions if name == "USER"] == ["app"]
    json.loads(instructions[-1][1])  # CMD in exec form: signals reach the process


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_web_worker_beat_postgresql_and_redis():
    services = compose()["services"]

    assert {"web", "worker", "beat", "db", "redis"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("web", "worker", "beat"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://app:app@db:5432/")
        assert env["JOBS_BROKER_URL"].startswith("redis://redis:6379/")


def test_compose_stops_the_worker_warmly_and_runs_its_commands():
    services = compose()["services"]
    worker, beat = services["worker"], services["beat"]
    args = manage_py_args(worker["command"])

    assert args[0] == "jobs_worker"
    assert worker["stop_signal"] == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) > shutdown_timeout(args)
    assert worker["deploy"]["replicas"] > 1
    parse_command(manage_py_args(beat["command"]))
    assert parse_command(manage_py_args(services["migrate"]["command"])).interactive is False


def test_the_deployment_guide_shows_every_file():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert [p.name for p in sorted(DEPLOY.iterdir()) if f"deploy/{p.name}" not in guide] == []
