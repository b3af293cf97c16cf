"""The short report: operations per second by kind, answers by status, each invariant."""

from __future__ import annotations

import collections
import dataclasses
import re

from testkit.servers import Instance

from .checks import MAX_DETAILS, Invariant
from .workload import FULL_SYNC_INTERVAL, SYNC_INTERVAL, Op

# Log lines worth a look after a failure: errors, tracebacks, and the product's warnings
# (but the expected one, a same-name upload refused by the bucket).
_NOTABLE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback|WORKER TIMEOUT|\bWARNING\b")
REFUSED_BY_BUCKET = "refused: already in the bucket"
# A log record's first line starts with its time (ours, gunicorn's "[...]") or is a JSON
# object (TIER=prod); a traceback's further lines are neither.
_RECORD_START = re.compile(r"^(\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\{)")
MAX_TRACEBACK_LINES = 40


@dataclasses.dataclass
class Result:
    text: str
    invariants: list[Invariant]

    @property
    def passed(self) -> bool:
        return all(invariant.passed for invariant in self.invariants)


def _status_key(status: object) -> tuple[int, str]:
    return (status, "") if isinstance(status, int) else (1000, str(status))


def operations_table(ops: list[Op], seconds: float) -> list[str]:
    """Counts and rates by kind; a kind's rate is over its own window, from the start to
    its last answer (the tools finish their round after the HTTP clients stop)."""
    by_kind: dict[str, list[Op]] = collections.defaultdict(list)
    for op in ops:
        by_kind[op.kind].append(op)
    lines = [f"{'operation':<14}{'count':>7}{'per s':>9}  statuses"]
    for kind, of_kind in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        window = max(op.ended for op in of_kind)
        lines.append(f"{kind:<14}{len(of_kind):>7}{len(of_kind) / window:>9.1f}  {_statuses(of_kind)}")
    lines.append(f"{'all':<14}{len(ops):>7}{len(ops) / seconds:>9.1f}  {_statuses(ops)}")
    return lines


def rate_over_time(ops: list[Op], seconds: float) -> str:
    """Operations answered per second in each tenth of the run: a store that slows as it
    fills, or a stall, shows here."""
    width = seconds / 10
    counts = collections.Counter(min(int(op.ended // width), 9) for op in ops)
    return f"operations per second, by tenth of the run: {' '.join(f'{counts[i] / width:.0f}' for i in range(10))}"


def _statuses(ops: list[Op]) -> str:
    counts = collections.Counter(op.status for op in ops)
    return ", ".join(f"{s}: {n}" for s, n in sorted(counts.items(), key=lambda item: _status_key(item[0])))


def notable_log_lines(instances: dict[str, Instance]) -> list[str]:
    lines = []
    for name, instance in instances.items():
        log_lines = instance.log().splitlines()
        found = [number for number, line in enumerate(log_lines)
                 if _NOTABLE.search(line) and REFUSED_BY_BUCKET not in line]
        lines.append(f"{name} ({instance.log_path}): {len(found)} lines at WARNING or worse")
        shown, covered_until = 0, -1
        for number in found:
            if number <= covered_until:
                continue  # a line of a record already shown whole (its traceback)
            if shown == MAX_DETAILS:
                break
            shown += 1
            lines.append(f"    {log_lines[number][:300]}")
            # The rest of the record (a traceback): what CI prints is all the next person sees.
            rest = _rest_of_record(log_lines, number)
            covered_until = number + len(rest)
            lines += [f"      {line[:300]}" for line in rest[:MAX_TRACEBACK_LINES]]
            if len(rest) > MAX_TRACEBACK_LINES:
                lines.append(f"      ... and {len(rest) - MAX_TRACEBACK_LINES} more lines")
    return lines


def _rest_of_record(log_lines: list[str], first: int) -> list[str]:
    """The lines after ``first`` up to the next log record (a traceback's frames)."""
    rest = []
    for line in log_lines[first + 1:]:
        if _RECORD_START.match(line):
            break
        rest.append(line)
    return rest


def render(title: str, ops: list[Op], seconds: float, settle: float, invariants: list[Invariant],
           instances: dict[str, Instance]) -> Result:
    lines = [title,
             f"SYNC_INTERVAL={SYNC_INTERVAL:g} FULL_SYNC_INTERVAL={FULL_SYNC_INTERVAL:g}; last answer after "
             f"{seconds:.1f} s, invariants checked {settle:g} s later", ""]
    lines += operations_table(ops, seconds)
    lines.append(rate_over_time(ops, seconds))
    # A same-name upload is refused by the instance itself if it already lists the file,
    # else by the bucket's create-only write: the race this load is after.
    refused = {name: instance.log().count(REFUSED_BY_BUCKET) for name, instance in instances.items()}
    lines.append(f"same-name uploads refused by the bucket's create-only write (instance logs): "
                 f"{sum(refused.values())} (A {refused['A']}, B {refused['B']})")
    lines += ["", "invariants:"]
    for invariant in invariants:
        verdict = "PASS" if invariant.passed else "FAIL"
        lines.append(f"  {verdict}  {invariant.name} ({invariant.checked} checked)")
        for failure in invariant.failures[:MAX_DETAILS]:
            lines.append(f"          - {failure}")
        if len(invariant.failures) > MAX_DETAILS:
            lines.append(f"          ... and {len(invariant.failures) - MAX_DETAILS} more")
    failed = sum(not invariant.passed for invariant in invariants)
    if failed or any(isinstance(op.status, str) or op.status >= 500 for op in ops):
        lines += ["", "instance logs:"] + notable_log_lines(instances)
    lines += ["", f"RESULT: {'FAIL' if failed else 'PASS'} ({failed} of {len(invariants)} invariants failed)"]
    return Result("\n".join(lines) + "\n", invariants)
