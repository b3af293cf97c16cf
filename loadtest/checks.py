"""The invariants, checked once the load is over and the freshness bounds have passed:
each reads the bucket straight through testkit/buckets.py and both instances over HTTP, and
compares with what the ledger says the clients were told."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Iterable

from testkit.buckets import BucketProbe
from testkit.servers import Instance, links

from .workload import BOUND, ELIGIBLE_AGE, PROJECTS, READS, Attempt, Ledger, Op

MAX_DETAILS = 8


@dataclasses.dataclass
class Invariant:
    name: str
    failures: list[str]
    checked: int  # how many things were looked at

    @property
    def passed(self) -> bool:
        return not self.failures


def _project(filename: str) -> str:
    return filename.split("-", 1)[0]


def _is_server_error(status: object) -> bool:
    return isinstance(status, str) or status >= 500


def _op(op: Op) -> str:
    text = f"{op.kind} {op.target} via {op.instance} at {op.started:.2f}-{op.ended:.2f}s: {op.status}"
    return text + (f" ({op.detail})" if op.detail else "")


class Checker:
    def __init__(self, ledger: Ledger, probe: BucketProbe, instances: dict[str, Instance]) -> None:
        self.ledger = ledger
        self.probe = probe
        self.instances = instances
        removals = ledger.removals
        self.removed = {name for name, op in removals.items() if op.status == 200}
        # A removal that got no answer or a 5xx may or may not have happened.
        uncertain = {name for name, op in removals.items() if op.status != 200 and _is_server_error(op.status)}
        self.kept: dict[str, Attempt] = {
            name: attempt for name, attempt in ledger.accepted.items() if name not in self.removed | uncertain
        }
        self.uncertain = uncertain
        self.bucket_names = probe.names()
        self.listed = {name: self._listing(instance) for name, instance in instances.items()}

    @staticmethod
    def _listing(instance: Instance) -> dict[str, str]:
        found: dict[str, str] = {}
        for project in PROJECTS:
            found.update(links(instance, project))
        return found

    def all(self, stuck_threads: Iterable[str], folders: dict[str, Path]) -> list[Invariant]:
        return [
            self.bucket_holds_kept_uploads(),
            self.both_instances_serve_kept_uploads(),
            self.same_name_pairs(),
            self.removed_files_stay_gone(),
            self.removals_succeeded(),
            self.installs_succeeded(),
            self.served_bytes_were_accepted(),
            self.freshness_during_load(),
            self.no_server_errors_on_reads(),
            self.no_server_errors(),
            self.no_leftover_temp_files(folders),
            self.coverage(list(stuck_threads)),
        ]

    def bucket_holds_kept_uploads(self) -> Invariant:
        failures = []
        for name, attempt in sorted(self.kept.items()):
            if name not in self.bucket_names:
                failures.append(f"{name}: accepted ({_op(attempt.op)}) but not in the bucket")
            elif self.probe.get(name) != attempt.data:
                failures.append(f"{name}: the bucket's bytes are not the accepted upload's ({_op(attempt.op)})")
        for name in sorted(self.bucket_names - self.kept.keys() - self.removed - self.uncertain):
            failures.append(f"{name}: in the bucket, but no upload of it was accepted")
        return Invariant("every upload that got 200 and was not removed is in the bucket with its bytes, "
                         "and nothing else is", failures, len(self.kept))

    def both_instances_serve_kept_uploads(self) -> Invariant:
        failures = []
        for instance_name, instance in self.instances.items():
            listed = self.listed[instance_name]
            for name, attempt in sorted(self.kept.items()):
                if name not in listed:
                    failures.append(f"{instance_name} does not list {name} ({_op(attempt.op)})")
                elif listed[name] != attempt.sha256:
                    failures.append(f"{instance_name} lists {name} with sha256 {listed[name][:12]}, "
                                    f"the upload's is {attempt.sha256[:12]}")
                status, body = instance.get(f"/packages/{name}")
                if status != 200 or body != attempt.data:
                    failures.append(f"{instance_name} serves {name} with {status} and "
                                    f"{'other bytes' if status == 200 else 'no file'} ({_op(attempt.op)})")
        return Invariant("both instances list and serve every kept upload, with its bytes and sha256",
                         failures, 2 * len(self.kept))

    def same_name_pairs(self) -> Invariant:
        pairs: dict[str, list[Attempt]] = collections.defaultdict(list)
        for attempt in self.ledger.attempts:
            if attempt.pair:
                pairs[attempt.pair].append(attempt)
        failures = []
        for name, halves in sorted(pairs.items()):
            winners = [a for a in halves if a.op.status == 200]
            losers = [a for a in halves if a.op.status != 200]
            outcome = "; ".join(_op(a.op) for a in halves)
            if len(halves) != 2 or len(winners) != 1 or losers[0].op.status != losers[0].expected_refusal:
                failures.append(f"{name}: {outcome}")
            elif self.probe.get(name) != winners[0].data:
                failures.append(f"{name}: the bucket does not hold the winner's bytes ({outcome})")
        return Invariant("of each same-name pair through A and B one got 200, the other 409 (400 for twine), "
                         "and the bucket holds the winner's bytes", failures, len(pairs))

    def removed_files_stay_gone(self) -> Invariant:
        failures = []
        for name in sorted(self.removed):
            op = self.ledger.removals[name]
            if name in self.bucket_names:
                failures.append(f"{name} is back in the bucket after {_op(op)}")
            for instance_name, instance in self.instances.items():
                if name in self.listed[instance_name]:
                    failures.append(f"{instance_name} lists {name} after {_op(op)}")
                status, _ = instance.get(f"/packages/{name}")
                if status != 404:
                    failures.append(f"{instance_name} answers {status} for {name} after {_op(op)}")
        return Invariant("a file whose removal got 200 is in neither the bucket nor either index, and 404s",
                         failures, len(self.removed))

    def removals_succeeded(self) -> Invariant:
        ops = [op for op in self.ledger.removals.values() if op.status != 0]
        failures = [_op(op) for op in ops if op.status != 200]
        return Invariant(f"every removal (of a file accepted at least {ELIGIBLE_AGE:g} s before) got 200",
                         failures, len(ops))

    def installs_succeeded(self) -> Invariant:
        ops = [op for op in self.ledger.ops if op.kind == "pip-install"]
        failures = [_op(op) for op in ops if op.status != 200]
        return Invariant(f"every pip install (of a wheel accepted at least {ELIGIBLE_AGE:g} s before, through "
                         "the other instance) succeeded and imported the uploaded code", failures, len(ops))

    def served_bytes_were_accepted(self) -> Invariant:
        """Whatever a read got during the load, in flight or not, was a whole accepted file."""
        failures = []
        checked = 0
        accepted = self.ledger.accepted
        for op in self.ledger.ops:
            served = {}
            if op.kind == "get-file" and op.status == 200:
                served = {op.target: op.digest}
            elif op.kind == "get-simple" and op.status == 200:
                served = op.listed or {}
            for name, digest in served.items():
                checked += 1
                if name not in accepted:
                    failures.append(f"{name} served, but no upload of it got 200 ({_op(op)})")
                elif digest != accepted[name].sha256:
                    failures.append(f"{name} served with sha256 {digest[:12]}, the accepted upload's is "
                                    f"{accepted[name].sha256[:12]} ({_op(op)})")
        return Invariant("every file and link served during the load was an accepted upload, whole", failures,
                         checked)

    def freshness_during_load(self) -> Invariant:
        """README's bound, under load: a read that starts SYNC_INTERVAL after an upload or
        a removal got its 200 sees it on either instance (plus a margin for the client)."""
        accepted_at = {name: a.op.ended for name, a in self.ledger.accepted.items()}
        removal_started = {name: op.started for name, op in self.ledger.removals.items()}
        removed_at = {name: self.ledger.removals[name].ended for name in self.removed}
        by_project: dict[str, list[str]] = collections.defaultdict(list)
        for name in accepted_at:
            by_project[_project(name)].append(name)
        failures = []
        checked = 0
        for op in self.ledger.ops:
            if op.kind not in READS or op.status not in (200, 404):
                continue
            if op.kind == "get-file":
                names, present = [op.target], {op.target} if op.status == 200 else set()
            else:
                names, present = by_project[op.target], set(op.listed or {})
            for name in names:
                if name in accepted_at and accepted_at[name] + BOUND <= op.started and not (
                        name in removal_started and removal_started[name] <= op.ended):
                    checked += 1
                    if name not in present:
                        failures.append(f"{name} accepted at {accepted_at[name]:.2f}s, missing from {_op(op)}")
                if name in removed_at and removed_at[name] + BOUND <= op.started:
                    checked += 1
                    if name in present:
                        failures.append(f"{name} removed at {removed_at[name]:.2f}s, still in {_op(op)}")
        return Invariant(f"every read that started {BOUND:g} s after an upload or removal got 200 "
                         "(SYNC_INTERVAL and a margin) saw it, on either instance", failures, checked)

    def no_server_errors_on_reads(self) -> Invariant:
        reads = [op for op in self.ledger.ops if op.kind in READS]
        failures = [_op(op) for op in reads if _is_server_error(op.status)]
        return Invariant("no read got a 5xx or no answer", failures, len(reads))

    def no_server_errors(self) -> Invariant:
        ops = [op for op in self.ledger.ops if op.kind != "pip-install" and op.status != 0]
        failures = [_op(op) for op in ops if _is_server_error(op.status)]
        return Invariant("no operation at all got a 5xx or no answer", failures, len(ops))

    def no_leftover_temp_files(self, folders: dict[str, Path]) -> Invariant:
        failures = []
        for name, folder in folders.items():
            leftovers = list(folder.rglob(".*.part")) + list((folder / ".gcs_sync").glob(".*.tmp"))
            failures += [f"{name}: {path.relative_to(folder)}" for path in leftovers]
        return Invariant("no temporary files (.*.part, .gcs_sync/.*.tmp) left in either local folder",
                         failures, len(folders))

    def coverage(self, stuck_threads: list[str]) -> Invariant:
        kinds = collections.Counter(op.kind for op in self.ledger.ops if op.status == 200)
        wanted = ("upload", "pair-upload", "twine-upload", "twine-pair", "remove", "get-simple", "get-file",
                  "pip-install")
        failures = [f"no {kind} got 200: the run checked nothing about it" for kind in wanted if not kinds[kind]]
        failures += [f"thread {name} did not finish" for name in stuck_threads]
        return Invariant("every kind of operation ran and succeeded at least once, every client finished",
                         failures, len(wanted))
