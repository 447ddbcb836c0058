"""The chaos tests with bigger numbers, by hand: ``python bench/chaos.py --jobs 20000``.

Runs tests/test_chaos.py (workers SIGKILLed mid-run, brokers restarted, random failures with
retries, garbage on the queues) with CHAOS_JOBS jobs per scenario, then prints what each run
recorded: jobs lost and jobs started more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "artifacts" / "chaos.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per scenario")
    parser.add_argument("-k", default="", help="pytest -k expression to pick scenarios")
    options = parser.parse_args()
    before = RESULTS.read_text().count("\n") if RESULTS.exists() else 0
    command = [sys.executable, "-m", "pytest", "tests/test_chaos.py", "-q", "--timeout", "3600"]
    if options.k:
        command += ["-k", options.k]
    code = subprocess.call(command, cwd=ROOT, env={**os.environ, "CHAOS_JOBS": str(options.jobs)})
    lines = RESULTS.read_text().splitlines()[before:] if RESULTS.exists() else []
    print(f"\n{'scenario':<16} {'broker':<8} {'jobs':>7} {'lost':>5} {'ran more than once':>19}")
    for line in lines:
        run = json.loads(line)
        print(f"{run['test']:<16} {run['broker']:<8} {run['jobs']:>7} {run['lost']:>5} "
              f"{run['ran_more_than_once']:>19}")
    return code


if __name__ == "__main__":
    sys.exit(main())
