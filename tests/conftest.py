"""Shared fixtures: real services (PostgreSQL, Redis, RabbitMQ) and real worker processes.

With CI=true a test that needs a service fails when the service is down; elsewhere it is
skipped with the command that starts the service.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# The jobs the tests run (tests/jobs_app/) must be installed in every process a test starts:
# workers, schedulers, other manage.py commands (project/settings.py reads this).
os.environ.setdefault("JOBS_TEST_APP", "1")

pytest_plugins = ["jobs.testing"]

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# Each test session keeps to its own keys on Redis and its own virtual host on RabbitMQ, so
# two sessions on one machine never consume or purge each other's jobs.
SESSION = f"jobs-test-{os.getpid()}"

SERVICES = {
    "redis": (6379, "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
                    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"),
    "rabbitmq": (5672, "rabbitmq-server -detached"),
    "postgres": (5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"),
}


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


#: Tests marked ``serial`` restart a service every test shares: they take this lock alone, the
#: others share it, so that with ``pytest -n N`` (or two runs at once) none runs beside one.
SERVICES_LOCK = Path(tempfile.gettempdir()) / "jobs-tests-services.lock"
#: Taken on the way to SERVICES_LOCK, and held by a serial test until it has that lock: the
#: tests that come after it wait behind it. Without it a serial test waited for a moment when
#: no other test ran, which the other workers, taking the shared lock one test after another,
#: left it for up to two minutes.
TURNSTILE = Path(tempfile.gettempdir()) / "jobs-tests-services.turnstile"


def pytest_configure(config):
    """Compile the project's modules once, before the workers start: the tests start hundreds
    of Python processes (workers, schedulers, commands), and where bytecode is not written
    (PYTHONDONTWRITEBYTECODE) each would compile them again: a fifth of a worker's start."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its controller did it
        return
    import compileall

    for package in ("jobs", "jobs_beat", "project", "tests", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


@pytest.fixture(autouse=True)
def _services_lock(request):
    exclusive = request.node.get_closest_marker("serial") is not None
    with open(TURNSTILE, "a") as turnstile, open(SERVICES_LOCK, "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield


def require(service: str) -> None:
    """Fail (in CI) or skip (elsewhere) unless ``service`` answers on its port."""
    port, start = SERVICES[service]
    if _reachable(port):
        return
    message = f"{service} is not reachable on 127.0.0.1:{port}; start it with: {start}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


# Brokers ------------------------------------------------------------------------------------

BROKERS = {"django": "django://", "redis": REDIS_URL, "amqp": AMQP_URL + SESSION}
BROKER_SERVICE = {"redis": "redis", "amqp": "rabbitmq"}


@pytest.fixture(scope="session")
def _amqp_vhost():
    """This session's RabbitMQ virtual host, made on first use and removed at the end."""
    subprocess.run(["rabbitmqctl", "add_vhost", SESSION], capture_output=True, check=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", SESSION, "guest", ".*", ".*", ".*"],
                   capture_output=True, check=True)
    yield
    subprocess.run(["rabbitmqctl", "delete_vhost", SESSION], capture_output=True)


def broker_params():
    """One parameter per broker. The database broker's also runs in the PostgreSQL session
    (``pytest -m pg``); the others don't depend on the database."""
    return [pytest.param(name, id=name, marks=[pytest.mark.pg] if name == "django" else [])
            for name in BROKERS]


POOLS = ("prefork", "threads", "solo")


def pool_matrix(pools=POOLS, every_broker: bool = True):
    """Parametrize ``(broker_url, pool)``: the prefork pool on every broker (or only the
    database broker), and each other pool named on the database broker, where a pool's
    behaviour doesn't depend on the broker. A test passes ``"-P", pool`` to its worker."""
    def param(broker: str, pool: str):
        return pytest.param(broker, pool, id=f"{broker}-{pool}",
                            marks=[pytest.mark.pg] if broker == "django" else [])

    pairs = [param(name, "prefork") for name in (BROKERS if every_broker else ["django"])
             if "prefork" in pools]
    pairs += [param("django", pool) for pool in pools if pool != "prefork"]
    return pytest.mark.parametrize(("broker_url", "pool"), pairs, indirect=["broker_url"])


def use_broker(settings, url: str) -> None:
    """Send to and consume from ``url`` (with the tests' transport options), in this
    process; the workers a test starts are given it too."""
    settings.JOBS = {**settings.JOBS, "BROKER_URL": url,
                     "BROKER_TRANSPORT_OPTIONS": TEST_TRANSPORT_OPTIONS}


@pytest.fixture
def broker_url(request, settings, transactional_db):
    """A clean broker for one test; the test process publishes to it as the worker reads it.
    Besides the names of :data:`BROKERS`, ``"rediss"``: Redis over TLS (:func:`_tls_redis`)."""
    name = request.param
    if name in BROKER_SERVICE:
        require(BROKER_SERVICE[name])
    if name == "amqp":
        request.getfixturevalue("_amqp_vhost")
    url = request.getfixturevalue("_tls_redis") if name == "rediss" else BROKERS[name]
    use_broker(settings, url)
    purge(url)
    yield url
    purge(url)


@pytest.fixture(scope="session")
def _tls_redis(tmp_path_factory):
    """A Redis server of this test process's own that speaks only TLS, with a certificate
    made for it: its ``rediss://`` URL, which checks that certificate."""
    with RedisServer(tmp_path_factory.mktemp("tls-redis"), tls=True) as server:
        yield server.url


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server for one test alone (:class:`RedisServer`), which the test may pause,
    cut off, or stop and start again without breaking anybody else's connections."""
    with RedisServer(tmp_path) as server:
        yield server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A ``redis-server`` of our own on a free port, its files in ``where`` (over TLS only,
    with a certificate made for it, if ``tls``): started, stopped and started again on the
    same port and files. As a context manager: started, and stopped at the end."""

    def __init__(self, where: Path, tls: bool = False) -> None:
        missing = [name for name in ("redis-server", "openssl") if shutil.which(name) is None
                   and (tls or name == "redis-server")]
        if missing:
            message = f"this test needs {' and '.join(missing)}: apt-get install redis-server openssl"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.where, port = where, free_port()
        self.command = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", str(where), "--logfile", str(where / "redis.log")]
        if tls:
            cert, key = where / "cert.pem", where / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                            "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
            self.command += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no"]
            self.url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        else:
            self.command += ["--port", str(port)]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server (with the data a ``stop(save=True)`` left) and wait until it
        answers, its data loaded."""
        import redis

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if client.info("persistence")["loading"] == 0:
                        return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"redis-server did not start ({self.url}; its log: "
                                    f"{self.where / 'redis.log'})")
                time.sleep(0.05)
        finally:
            client.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, save: bool = False) -> None:
        """Stop the server; with ``save``, as a server with persistence does: its data
        written to disk for the next start."""
        if self.process is None or self.process.poll() is not None:
            return
        if save:
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                client.shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it goes
        else:
            self.process.terminate()
        self.process.wait(30)


class PostgresCluster:
    """A PostgreSQL cluster of one test's own (Debian's ``pg_createcluster``, trust auth, on a
    free port), which the test may stop and restart without touching the server every other
    test uses; dropped after. Needs root, as ``pg_ctlcluster`` does."""

    def __init__(self) -> None:
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if not versions or shutil.which("pg_createcluster") is None or os.geteuid() != 0:
            cannot = ("needs Debian's pg_createcluster and pg_ctlcluster, as root "
                      "(apt-get install postgresql)")
            if IN_CI:
                pytest.fail(cannot)
            pytest.skip(cannot)
        self.version, self.name = versions[-1], f"jobs-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    def create(self) -> None:
        self._run("pg_createcluster", self.version, self.name, "-p", str(self.port),
                  "--start-conf=manual", "--", "--auth=trust")
        self.ctl("start")

    def ctl(self, action: str) -> None:
        """``pg_ctlcluster`` ``action`` (start, stop, restart) on this cluster."""
        self._run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action)

    @property
    def running(self) -> bool:
        return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version,
                               self.name, "status"], capture_output=True).returncode == 0

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name],
                       capture_output=True, timeout=120)

    @staticmethod
    def _run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            pytest.fail(f"{' '.join(command)} failed: {done.stderr or done.stdout}")


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster for one test alone (:class:`PostgresCluster`), started."""
    cluster = PostgresCluster()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.drop()


# Short enough that a killed worker's job comes back within a test, long enough that a live
# worker's renewal (every heartbeat) keeps its running jobs.
TEST_TRANSPORT_OPTIONS = {"visibility_timeout": 4, "global_keyprefix": f"{SESSION}:"}
TEST_HEARTBEAT = 0.5
TEST_QUEUES = ("default", "other")


def purge(url: str) -> None:
    from kombu import Exchange, Queue

    from jobs.broker import new_connection

    if url.startswith("django"):
        from jobs.models import Message

        Message.objects.all().delete()
        return
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{SESSION}:*", count=1000))
        if keys:
            client.delete(*keys)
        return
    with new_connection(url) as conn:
        channel = conn.channel()
        for name in TEST_QUEUES:  # as declared without priorities, whatever the test set
            queue = Queue(name, Exchange(name, "direct"), routing_key=name)(channel)
            queue.declare()
            queue.purge()


# Worker processes ---------------------------------------------------------------------------


def database_url() -> str:
    from django.db import connection

    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or ""
    auth = f"{user}@" if user else ""
    return f"postgres://{auth}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}/{conf['NAME']}"


class CommandProcess:
    """A real ``manage.py <command>`` against the test database, in its own process group."""

    ready_text = ""

    def __init__(self, command: str, broker_url: str, args: list[str], log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "JOBS_BROKER_URL": broker_url,
            "JOBS_BROKER_TRANSPORT_OPTIONS": json.dumps(TEST_TRANSPORT_OPTIONS),
            "JOBS_WORKER_HEARTBEAT_INTERVAL": str(TEST_HEARTBEAT),
            "PYTHONUNBUFFERED": "1",
            "JOBS_TEST_APP": "1",
        }
        self.log = log
        self._out = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), command, *args],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_text in self.output:
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout}s:\n{self.output}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_all(self, signum: int = 9) -> None:
        """Kill the process and its children at once, as an OOM killer or power cut would."""
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    kill = kill_all

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill_all(9)
        self._out.close()


class WorkerProcess(CommandProcess):
    ready_text = "consuming from"


class BeatProcess(CommandProcess):
    ready_text = "scheduling"


def _process_fixture(request, tmp_path, kind, command, default_args=()):
    started: list[CommandProcess] = []

    def start(broker_url: str = "django://", *args: str, ready: bool = True):
        log = tmp_path / f"{command}-{len(started) + 1}.log"
        process = kind(command, broker_url, [*default_args, *args], log)
        started.append(process)
        return process.wait_ready() if ready else process

    return started, start


def _stop_all(request, started) -> None:
    for process in started:
        process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for process in started:
            print(f"--- {process.log.name} ---\n{process.output}")


@pytest.fixture
def start_worker(transactional_db, tmp_path, request):
    """Start real workers: ``start_worker(broker_url, "-c", "2")``; all are stopped after."""
    started, start = _process_fixture(request, tmp_path, WorkerProcess, "jobs_worker",
                                      ("-Q", ",".join(TEST_QUEUES)))
    yield start
    _stop_all(request, started)


@pytest.fixture
def start_beat(transactional_db, tmp_path, request):
    """Start real schedulers: ``start_beat("--no-sync", broker_url=...)``; killed after."""
    started, start = _process_fixture(request, tmp_path, BeatProcess, "jobs_beat",
                                      ("--tick", "0.2"))

    def start_beat_process(*args: str, broker_url: str = "django://"):
        return start(broker_url, *args)

    yield start_beat_process
    _stop_all(request, started)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def staff_client(client, django_user_model):
    """Log in a staff user holding only the given ``jobs`` permissions (codenames)."""

    from django.contrib.auth.models import Permission

    def login(*codenames: str):
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="jobs", codename__in=codenames))
        client.force_login(user)
        return client

    return login


def wait_for(predicate, timeout: float = 20, interval: float = 0.05, message: str = ""):
    """Poll ``predicate`` until it returns something true; fail with ``message`` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout}s")


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(trylast=True)  # after pytest-django orders the tests its way
def pytest_collection_modifyitems(config, items):
    """The modules marked ``long`` go first: pytest-xdist hands out whole modules in this
    order (``--dist loadfile --no-loadscope-reorder``), and one that started last would
    keep a worker busy alone after the others are done. And a session on PostgreSQL
    (DATABASE_URL=postgres://...) needs the server up."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # a stable sort
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return
    port, start = SERVICES["postgres"]
    if _reachable(port) or IN_CI:
        return  # in CI, an unreachable server makes every database test fail, as it should
    skip = pytest.mark.skip(reason=f"PostgreSQL is not reachable on 127.0.0.1:{port}; "
                                   f"start it with: {start}")
    for item in items:
        item.add_marker(skip)
