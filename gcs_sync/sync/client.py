"""StorageClient: keeps one local package folder converged on the bucket.

A facade over the parts that do the work, each in its own module, all sharing one
inter-process file lock on the folder (gunicorn workers sharing one folder never race)
and one record of how current the view is (``view.ViewRecord``):

    freshness   FreshnessGate: what every read asks, one check, the back-off
    checker     Checker: the background thread, the warm-up, the count of checks
    engine      SyncEngine: gather, plan (``plan_sync``), apply, record
    readiness   the fields readiness reports
    feed        ChangeFeed: the bucket's change feed (what changed, where)
    writes      RequestWrites: a request's own uploads and removals
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence

import filelock

from gcs_sync.clock import Moment
from gcs_sync.drivers.base import FileStoreDriver, StoredObject
from gcs_sync.sync import readiness
from gcs_sync.sync.breaker import WriteBreaker
from gcs_sync.sync.checker import Checker
from gcs_sync.sync.engine import SyncEngine
from gcs_sync.sync.folder import PackageFolder, StagedFile
from gcs_sync.sync.freshness import FreshnessGate
from gcs_sync.sync.feed import ChangeFeed, PositionFile
from gcs_sync.sync.pending import DEFAULT_EXPIRY, PendingUploads
from gcs_sync.sync.report import SyncProgress, SyncReport
from gcs_sync.sync.settle import SETTLE_SECONDS, SettleWatch
from gcs_sync.sync.state import StateFile
from gcs_sync.sync.tracked import TrackedState
from gcs_sync.sync.view import ViewRecord
from gcs_sync.sync.writes import RequestWrites


class StorageClient:
    def __init__(
        self,
        driver: FileStoreDriver,
        folder: PackageFolder,
        *,
        sync_interval: float,
        lock_timeout: float,
        full_sync_interval: float = 60.0,
        push_local_changes: bool = False,
        concurrency: int = 8,
        after_check: Optional[Callable[[bool], None]] = None,
        may_write: bool = True,
        catalog: bool = False,
        fill_in_background: bool = False,
        feed_clock_skew: float = 300.0,
        feed_retention: float = 86400.0,
        wall_clock: Callable[[], float] = time.time,
        storage_timeout: float = 10.0,
        settle_seconds: float = SETTLE_SECONDS,
        pending_expiry: float = DEFAULT_EXPIRY,
    ) -> None:
        self.driver = driver
        self.folder = folder
        self.state = StateFile(folder.control, driver.url)
        self._lock = filelock.FileLock(str(folder.control / "lock"), timeout=lock_timeout)
        self._stopping = threading.Event()
        self._view = ViewRecord(self.state, sync_interval)
        # The synced state as last read, kept current by reading only what changed.
        known_state = TrackedState(self.state)
        self.tracked_state = known_state  # the worker's one copy of the state; the index reads it
        self._view.recorded = lambda names: known_state.lookup(names).keys()
        # Every change through this index adds a feed entry; every check reads the new ones.
        positions = PositionFile(folder.control, driver.url)
        self.feed = ChangeFeed(driver, clock_skew=feed_clock_skew, retention=feed_retention, wall_clock=wall_clock,
                               newest_seen=positions.newest_ms)
        pending = PendingUploads(driver, pending_expiry, self.feed)
        self._engine = SyncEngine(
            driver, folder, self._view, self._lock,
            known_state=known_state, feed=self.feed, positions=positions,
            catalog=catalog, fill_in_background=fill_in_background, push_allowed=may_write,
            settle=SettleWatch(settle_seconds), pending=pending,
            stopping=self._stopping, full_sync_interval=full_sync_interval,
            push_local_changes=push_local_changes, concurrency=concurrency,
            after_check=after_check or (lambda listed: None),
        )
        self._checker = Checker(self._view, self.refresh_now, driver.url, self._stopping)
        self._gate = FreshnessGate(self._view, self._engine, self._lock, self._checker)
        self._writes = RequestWrites(
            driver, folder, self.state, self._lock, known_state=known_state,
            breaker=WriteBreaker(folder.control, storage_timeout), pending=pending, feed=self.feed,
            records=self._engine.records.store, catalog=catalog,
        )

    # -- freshness -------------------------------------------------------------------

    def ensure_fresh(self) -> None:
        self._gate.ensure_fresh()

    def refresh_now(self, lock_wait: Optional[float] = None) -> None:
        self._gate.refresh_now(lock_wait)

    def is_fresh(self) -> bool:
        return self._view.is_fresh()

    @property
    def ready_after(self) -> Optional[float]:
        """Seconds from start to this process's first view known to be current."""
        return self._gate.ready_after

    @property
    def _checked(self) -> Optional[Moment]:
        """This process's last check that found the folder current (tests age it)."""
        return self._view.checked

    @_checked.setter
    def _checked(self, moment: Optional[Moment]) -> None:
        self._view.checked = moment

    def status(self) -> dict[str, object]:
        """What readiness reports, for this instance (``readiness.status``)."""
        return readiness.status(self._view, self.driver.url, self._lock.timeout)

    # -- the checker -----------------------------------------------------------------

    def start_warm_up(self, then: Callable[[], None] = lambda: None) -> threading.Thread:
        return self._checker.start_warm_up(then)

    @property
    def checks_completed(self) -> int:
        return self._checker.checks_completed

    def wait_for_checks(self, more_than: int, timeout: float) -> bool:
        return self._checker.wait_for_checks(more_than, timeout)

    def wait_until_started(self, timeout: float) -> bool:
        return self._checker.wait_until_started(timeout)

    def forget_state(self) -> None:
        """Drop this process's copy of the state until it is needed again (the listing
        process: between two listings it holds nothing)."""
        self.tracked_state.forget()

    def last_listing_age(self) -> Optional[float]:
        """Seconds since the instance's last full listing began (any process's); None if
        there was none yet or its age cannot be told."""
        listing = self._view.last_listing()
        return None if listing is None else listing.age()

    def wait_for_maintenance(self, timeout: float = 30.0) -> bool:
        """Wait for the catalog snapshot and feed expiry that follow a full listing."""
        return self._engine.wait_for_maintenance(timeout)

    def wait_for_fill(self, timeout: float = 60.0) -> bool:
        """Wait for a mirror's fill of its folder (``fill_in_background``) to end."""
        return self._engine.wait_for_fill(timeout)

    def stop(self) -> None:
        """Let a sync under way finish the transfers in flight and skip the rest, so a
        worker asked to exit during a long cold start does so promptly; end the checker."""
        self._stopping.set()
        self._checker.stop()

    # -- the sync and a request's own changes ----------------------------------------

    def sync(self, progress: Optional[SyncProgress] = None) -> SyncReport:
        return self._engine.sync(progress)

    def publish(self, staged: Sequence[StagedFile], *, overwrite: bool) -> list[StoredObject]:
        return self._writes.publish(staged, overwrite=overwrite)

    def retract(self, names: Sequence[str]) -> None:
        self._writes.retract(names)
