"""I/O-bound jobs on the asyncio and gevent pools: jobs that each wait 1 s on I/O, run by one
worker with ``-P asyncio -c 500`` (an ``async def`` job awaiting a timer) or ``-P gevent -c 500``
(a plain job sleeping, which gevent makes cooperative); the time from the first enqueue to the
last result. On prefork ``-c 2`` the same 1,000 jobs would take 500 s.

    python bench/io_bound.py redis://127.0.0.1:6379/9 sqlite:////tmp/io.sqlite3 1000 asyncio
    python bench/io_bound.py redis://127.0.0.1:6379/9 sqlite:////tmp/io.sqlite3 1000 gevent
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(broker: str, database: str, count: int = 1000, pool: str = "asyncio") -> None:
    os.environ.update({
        "DATABASE_URL": database, "JOBS_BROKER_URL": broker, "JOBS_TEST_APP": "1",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "JOBS_BROKER_TRANSPORT_OPTIONS": json.dumps({"global_keyprefix": f"io-{os.getpid()}:"}),
    })
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from tests.jobs_app import jobs as testjobs

    call_command("migrate", verbosity=0)
    job = testjobs.blocking_wait if pool == "gevent" else testjobs.async_wait
    log_path = Path(f"/tmp/io-bound-worker-{os.getpid()}.log")
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "jobs_worker", "-P", pool, "-c", "500"],
            cwd=ROOT, env=os.environ, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"consuming from" not in log_path.read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.1)
        began = time.monotonic()
        handles = job.delay_many([(1,)] * count)
        enqueued = time.monotonic() - began
        results = [h.get(timeout=120) for h in handles]
        took = time.monotonic() - began
        ok = all(r["waited"] == 1 for r in results)
        print(f"{broker} {database.split('://')[0]}: {count} jobs x 1 s on -P {pool} -c 500: "
              f"{took:.2f} s (enqueue {enqueued:.2f} s), all ok: {ok}")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
            worker.wait(30)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1000,
         sys.argv[4] if len(sys.argv) > 4 else "asyncio")
