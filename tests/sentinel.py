"""A Redis master, its replica and a Sentinel watching them, started for the tests on free
ports of their own (never the shared Redis on 6379), from Debian's redis-server and
redis-sentinel."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MASTER_NAME = "jobs-test-master"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SentinelGroup:
    """``redis-server`` ×2 (a master and its replica) and one ``redis-sentinel`` (quorum 1),
    as child processes with their files in a temporary folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="jobs-sentinel-"))
        self.ports = {"master": free_port(), "replica": free_port(), "sentinel": free_port()}
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.ports['sentinel']}"

    def start(self) -> SentinelGroup:
        self._redis("master")
        self._redis("replica", "--replicaof", "127.0.0.1", str(self.ports["master"]))
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.ports['sentinel']}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.ports['master']} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n")
        self._spawn("sentinel", ["redis-sentinel", str(config)])
        self.wait(self.replica_known, "the sentinel did not find the replica")
        return self

    def _redis(self, name: str, *args: str) -> None:
        self._spawn(name, ["redis-server", "--port", str(self.ports[name]), "--bind",
                           "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                           str(self.folder), "--dbfilename", f"{name}.rdb", *args])

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "wb")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        self.wait(lambda: self._answers(self.ports[name]), f"{name} did not start")

    def _answers(self, port: int) -> bool:
        try:
            return self.client(port).ping()
        except Exception:
            return False

    def client(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def sentinel(self):
        return self.client(self.ports["sentinel"])

    def master_port(self) -> int:
        host, port = self.sentinel().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def master(self):
        return self.client(self.master_port())

    def replica_known(self) -> bool:
        replicas = self.sentinel().execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
        return any(_fields(r).get("master-link-status") == "ok" for r in replicas)

    def failover(self) -> int:
        """Promote the replica (``SENTINEL FAILOVER``); returns the new master's port."""
        before = self.master_port()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        self.wait(lambda: self.master_port() != before, "the failover did not happen", 30)
        return self.master_port()

    @staticmethod
    def wait(predicate, message: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(message)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _fields(reply) -> dict:
    """One entry of a SENTINEL REPLICAS reply (a flat list, or a dict as redis-py parses it)."""
    if not isinstance(reply, dict):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    return {_text(k): _text(v) for k, v in reply.items()}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value
