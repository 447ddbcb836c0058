"""Dramatiq on the same broker: ``dramatiq bench.dramatiq_tasks -p 2 -t 1``.

Two processes of one thread each, so that two jobs run at once as in the other workers; and,
by default, also with Dramatiq's own default of 8 threads per process. Results (for the round
trip) through Dramatiq's Results middleware on Redis.
"""

from __future__ import annotations

from bench.peers import Peer, python


class DramatiqPeer(Peer):
    library = "dramatiq"
    key = "dramatiq"
    label = "Dramatiq -p 2 -t 1"
    results = "off (Redis for the round trip)"
    figures = frozenset({"enqueue", "drain", "roundtrip", "scale"})
    bulk_method = "group(...).run()"

    def __init__(self, ctx, threads: int = 1) -> None:
        super().__init__(ctx)
        from bench import dramatiq_tasks

        self.tasks = dramatiq_tasks
        self.threads = threads
        if threads != 1:
            self.key = f"dramatiq-t{threads}"
            self.label = f"Dramatiq -p 2 -t {threads}"
            self.figures = frozenset({"enqueue", "drain", "roundtrip"})

    def worker_argv(self) -> list[str]:
        return [python(), "-m", "dramatiq", "bench.dramatiq_tasks", "-p", "2",
                "-t", str(self.threads), "-Q", self.queue]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DRAMATIQ_QUEUE": self.queue}

    def enqueue(self, n: int) -> None:
        send = self.tasks.noop.send
        for _ in range(n):
            send()

    def enqueue_bulk(self, n: int) -> None:
        from dramatiq import group

        group(self.tasks.noop.message() for _ in range(n)).run()

    def enqueue_delayed(self, n: int, seconds: int) -> None:
        send = self.tasks.noop.send_with_options
        for _ in range(n):
            send(delay=seconds * 1000)

    def send_mark(self, key: str) -> None:
        self.tasks.mark.send(key)

    def round_trip(self) -> None:
        self.tasks.noop_result.send().get_result(block=True, timeout=10_000)
