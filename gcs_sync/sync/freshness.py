"""The freshness gate: what every read asks (``ensure_fresh``), one check under the folder
lock (``refresh_now``), and the back-off after a failed one.

Freshness costs O(changes), not O(requests): at most once per SYNC_INTERVAL per instance
a worker lists the bucket's change feed from this instance's position (one listing call),
to which every upload, removal, yank and change of users adds an entry, and syncs only
the files the new entries name; every FULL_SYNC_INTERVAL (changes made straight in the
bucket by other tools) the whole bucket is listed (``SyncEngine.refresh_locked``).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import filelock

from gcs_sync.clock import Moment
from gcs_sync.errors import StorageError, failure_reason
from gcs_sync.sync.checker import Checker
from gcs_sync.sync.engine import SyncEngine
from gcs_sync.sync.view import ViewRecord

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know


class FreshnessGate:
    def __init__(self, view: ViewRecord, engine: SyncEngine, lock: filelock.BaseFileLock, checker: Checker) -> None:
        self._view = view
        self._engine = engine
        self._lock = lock
        self._checker = checker
        self._store_url = engine.driver.url
        self._created = time.monotonic()
        # Seconds from start to this process's first view known to be current.
        self.ready_after: Optional[float] = None

    def ensure_fresh(self) -> None:
        """What every read asks. Reads never wait for a listing: the instance's checker
        thread (``start_checking``) looks at the bucket every SYNC_INTERVAL, and a read
        that finds the view older than that only wakes it and is served the last complete
        view meanwhile. A read waits for a check in two cases only: a cold start (nothing
        listed yet on this folder: nothing to serve), and a view so old that no check can
        have run for a while (``checks_stalled``: an instance whose CPU is throttled
        between requests), and then only if no other check holds the folder. Never
        raises: failures are logged and recorded."""
        if self._view.is_fresh():
            return
        if self._view.last_listing() is None:
            self.refresh_now()
        elif self._view.checks_stalled():
            self.refresh_now(lock_wait=0)  # a check already under way elsewhere: don't wait
        else:
            self._checker.wake()

    def refresh_now(self, lock_wait: Optional[float] = None) -> None:
        """One check, in the caller's thread: a listing of the change feed, and a sync of
        the files its new entries name (see ``SyncEngine.refresh_locked``). For the checker thread, a
        cold start, and a write that needs the current view (a removal of a file this
        worker has not seen). ``lock_wait``: how long to wait for the folder lock (default
        STORAGE_TIMEOUT). Never raises for a storage or folder failure: reads go on from
        the local copy, and it is logged."""
        try:
            self._refresh_now(lock_wait)
        finally:
            # Counted whether it looked at the bucket or found it need not (fresh, or
            # backing off after a failure): either way the view is as current as it gets.
            self._checker.count_check()

    def _refresh_now(self, lock_wait: Optional[float]) -> bool:
        """The check; False if none was made (a back-off, a view made fresh meanwhile, or
        the lock held elsewhere with ``lock_wait`` 0)."""
        view = self._view
        if view.failed_at is not None and time.monotonic() - view.failed_at < view.sync_interval:
            return False  # the bucket just failed, or a long sync holds the lock: don't wait again
        if view.is_fresh():
            return False
        try:
            with self._lock.acquire(timeout=lock_wait):
                if view.is_fresh():  # a sibling worker checked while we waited
                    return False
                self._engine.refresh_locked()
            view.failed_at = None
            view.unrecorded_failure = None
            view.state.clear_failure()
            self._note_ready()
        except filelock.Timeout:
            if lock_wait == 0:
                return False  # another worker is checking: its result comes to every reader
            # A long sync (a cold start) is under way: don't make every request wait for it.
            view.failed_at = time.monotonic()
            log.warning("sync skipped: another worker has held %s for %.0fs; serving the local copy",
                        self._lock.lock_file, self._lock.timeout)
        except (StorageError, OSError) as exc:
            view.failed_at = time.monotonic()
            message, reason = f"sync from {self._store_url} failed: {exc}", failure_reason(exc)
            log.error("sync from %s failed, serving the local copy: %s", self._store_url, exc)
            if not view.state.record_failure(message, reason=reason):
                # A full disk: this worker's readiness still tells (its siblings can't know).
                view.unrecorded_failure = (Moment.now(), {"error": message, "at": time.time(), "reason": reason})
        return True

    def _note_ready(self) -> None:
        if self.ready_after is None:
            self.ready_after = time.monotonic() - self._created
            log.info("ready: %s is current with %s, %.2fs after start", self._engine.folder.path, self._store_url,
                     self.ready_after)
