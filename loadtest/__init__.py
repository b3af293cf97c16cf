"""A bounded load test: two instances of two gunicorn workers each on one bucket, under
concurrent uploads (same-name pairs through both instances included), removals, reads and
pip installs for a fixed time; then, past the freshness bounds, the invariants.

``python -m loadtest`` runs it from the command line (README: "Load test");
tests/test_load.py runs its short form on every backend. ``run`` is the entry point for
both, given a bucket (testkit/buckets.py) whose storage server is already up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from testkit.buckets import BucketProbe

from .checks import Checker
from .cluster import WORKERS, two_instances
from .report import Result, render
from .workload import FULL_SYNC_INTERVAL, SYNC_INTERVAL, Workload, op_record

# Past both freshness bounds (README): changes through the index and straight in the bucket.
SETTLE_SECONDS = SYNC_INTERVAL + FULL_SYNC_INTERVAL + 1.0


def run(probe: BucketProbe, workdir: Path, *, seconds: float, clients: int, seed: int = 1,
        say: Callable[[str], None] = lambda message: None) -> Result:
    workdir.mkdir(parents=True, exist_ok=True)
    with two_instances(probe, workdir) as instances:
        say(f"instances A {instances['A'].url} and B {instances['B'].url} on {probe.backend} bucket {probe.name}; "
            f"{clients} clients for {seconds:g} s")
        workload = Workload(instances, workdir, seconds, clients, seed)
        length = workload.run()
        log = workdir / "operations.jsonl"
        with open(log, "w", encoding="utf-8") as out:
            for op in sorted(workload.ledger.ops, key=lambda op: op.started):
                out.write(json.dumps(op_record(op)) + "\n")
        say(f"load done: {len(workload.ledger.ops)} operations in {length:.1f} s (every one in {log}); "
            f"checking in {SETTLE_SECONDS:g} s")
        time.sleep(SETTLE_SECONDS)
        invariants = Checker(workload.ledger, probe, instances).all(
            workload.stuck_threads, {name: instance.folder for name, instance in instances.items()})
        title = (f"Load test: {probe.backend} bucket, 2 instances x {WORKERS} gunicorn workers, {clients} HTTP "
                 f"clients + 1 twine/pip client, {seconds:g} s (seed {seed})")
        return render(title, workload.ledger.ops, length, SETTLE_SECONDS, invariants, instances)


__all__ = ["Result", "run"]
