"""What a sync did, and the log lines that say it: one per sync, per feed check, per bucket write.

    SyncReport        what one sync applied, skipped and failed
    SyncProgress      the callbacks a caller (the CLI's progress bar) may pass to a sync
    BucketMeter       seconds and bucket calls of a piece of work
    log_sync, log_feed_check, log_bucket_write
                      the INFO/DEBUG lines, text in dev and Cloud Logging JSON fields in prod
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
import typing as t
from typing import Optional, Protocol

from gcs_sync.errors import StorageError
from gcs_sync.sync import events
from gcs_sync.sync.events import ContentChangeEvent
from gcs_sync.sync.plan import SyncPlan

if t.TYPE_CHECKING:
    from gcs_sync.drivers.base import FileStoreDriver

@dataclasses.dataclass
class SyncReport:
    applied: list[ContentChangeEvent] = dataclasses.field(default_factory=list)
    failed: list[tuple[ContentChangeEvent, StorageError]] = dataclasses.field(default_factory=list)
    skipped_names: list[str] = dataclasses.field(default_factory=list)
    # Left for a later sync: files still being written here, or uploads under way.
    deferred: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    bucket_calls: int = 0

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for event in self.applied:
            counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
        changes = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items())) or "no changes"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return f"{changes}{failed} in {self.seconds:.3f}s, {self.bucket_calls} bucket calls"


class SyncProgress(Protocol):
    """Watches one sync from outside (the command line's progress bar): its plan, then
    each event as it finishes, in the syncing thread."""

    def planned(self, plan: SyncPlan) -> None: ...

    def finished(self, event: ContentChangeEvent, error: Optional[StorageError]) -> None: ...


class Outcome(enum.StrEnum):
    """What a sync did to a file, in the order the sync line says them: the value is the
    field in the JSON."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    PUSHED = "pushed"
    PUSHED_OVER = "pushed_over"
    DELETED = "deleted"
    RECORD_FETCHED = "records_fetched"
    RECORD_COMPUTED = "records_computed"
    CATALOGUED = "catalogued"
    UNCATALOGUED = "uncatalogued"
    FAILED = "failed"

    @property
    def verb(self) -> str:
        """How the message says it."""
        return _VERBS[self]


_VERBS = {
    Outcome.ADDED: "pulled",
    Outcome.CHANGED: "replaced",
    Outcome.REMOVED: "removed",
    Outcome.PUSHED: "pushed",
    Outcome.PUSHED_OVER: "pushed over the bucket copy",
    Outcome.DELETED: "deleted from the bucket",
    Outcome.RECORD_FETCHED: "took the changed record of",
    Outcome.RECORD_COMPUTED: "computed the missing record of",
    Outcome.CATALOGUED: "catalogued",
    Outcome.UNCATALOGUED: "forgot",
    Outcome.FAILED: "failed",
}
# Each kind of event, applied.
_APPLIED: dict[type, Outcome] = {
    events.RemoteAdded: Outcome.ADDED,
    events.RemoteChanged: Outcome.CHANGED,
    events.RemoteDeleted: Outcome.REMOVED,
    events.LocalAdded: Outcome.PUSHED,
    events.LocalChanged: Outcome.PUSHED_OVER,
    events.LocalDeleted: Outcome.DELETED,
    events.RecordChanged: Outcome.RECORD_FETCHED,
    events.RecordMissing: Outcome.RECORD_COMPUTED,
    events.Catalogued: Outcome.CATALOGUED,
    events.RecordRead: Outcome.CATALOGUED,
    events.Uncatalogued: Outcome.UNCATALOGUED,
}
_NAMES_IN_MESSAGE = 3
_NAMES_IN_FIELDS = 20


class BucketMeter:
    """Seconds and bucket calls since it was made (calls by the whole worker meanwhile)."""

    def __init__(self, driver: "FileStoreDriver") -> None:
        self._driver = driver
        self._started = time.monotonic()
        self._calls = sum(driver.calls.values())

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started

    @property
    def bucket_calls(self) -> int:
        return sum(self._driver.calls.values()) - self._calls


def log_sync(logger: logging.Logger, store_url: str, report: SyncReport, *, listed: bool = True) -> None:
    """One INFO line for a sync: what changed (counts by kind and the first few names),
    what failed, seconds, bucket calls. ``listed``: it listed the whole bucket (else it
    synced the files the change feed named)."""
    names: dict[Outcome, list[str]] = {outcome: [] for outcome in Outcome}
    for event in report.applied:
        names[_APPLIED[type(event)]].append(event.name)
    names[Outcome.FAILED] = [event.name for event, _ in report.failed]
    changes = ", ".join(
        f"{outcome.verb} {len(found)} ({_first(found)})" for outcome, found in names.items() if found
    ) or "no changes"
    sync = {
        "store": store_url,
        "listed": listed,
        **{outcome.value: len(found) for outcome, found in names.items()},
        "skipped": len(report.skipped_names),
        "seconds": round(report.seconds, 6),
        "bucket_calls": report.bucket_calls,
        "files": {outcome.value: sorted(found)[:_NAMES_IN_FIELDS] for outcome, found in names.items() if found},
    }
    logger.info("sync with %s (%s): %s; %.3fs, %d bucket calls", store_url,
                "full listing" if listed else "change feed", changes, report.seconds,
                report.bucket_calls, extra={"json_fields": {"sync": sync}})


def log_feed_check(logger: logging.Logger, store_url: str, meter: BucketMeter) -> None:
    """A check that found no new entry in the change feed. DEBUG: it happens every
    SYNC_INTERVAL while requests arrive."""
    sync = {"store": store_url, "listed": False, "seconds": round(meter.seconds, 6),
            "bucket_calls": meter.bucket_calls}
    logger.debug("sync with %s: no new entry in the change feed; %.3fs, %d bucket calls",
                 store_url, sync["seconds"], sync["bucket_calls"], extra={"json_fields": {"sync": sync}})


def log_bucket_write(logger: logging.Logger, action: str, name: str, store_url: str, meter: BucketMeter, *,
                     version: t.Optional[str] = None, size: t.Optional[int] = None) -> None:
    """One INFO line for a bucket write made for a request: an upload's "store" or a
    removal's "delete", with its seconds and bucket calls."""
    seconds, calls = meter.seconds, meter.bucket_calls
    write: dict[str, object] = {"action": action, "file": name, "store": store_url, "seconds": round(seconds, 6),
                                "bucket_calls": calls}
    if action == "store":
        write.update(version=version, bytes=size)
        what = f"stored {name!r} in {store_url} (version {version}, {size} bytes)"
    else:
        what = f"deleted {name!r} from {store_url}"
    logger.info("%s in %.3fs, %d bucket calls", what, seconds, calls, extra={"json_fields": {"bucket_write": write}})


def _first(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:_NAMES_IN_MESSAGE])
    return f"{shown}, ..." if len(names) > _NAMES_IN_MESSAGE else shown
