"""The sync itself: gather the three listings (bucket, folder, last-synced state), plan
with the pure ``plan_sync``, apply each event's strategy, and record each file's new
state as soon as it is done, then the listing. Callers hold the folder lock (an
inter-process file lock), so gunicorn workers sharing one folder never race.

    gather   list the bucket (the packages, then their records), scan the folder, read
             the state; leave out what is not a package and the files of uploads under way
    plan     plan_sync (pure), told which local files are still being written
    apply    the events' strategies, up to SYNC_CONCURRENCY at a time
    record   feed entries of pushes, a compaction, unservable files, the listing, the check

A mirror server (``fill_in_background``) starts like a catalog instance when its folder is
empty: from the newest catalog snapshot and the feed since, ready without one package file;
the files it has catalogued but not yet brought here are served through the cache meanwhile
(``web/package_files.py``), and a thread brings them (``fill.py``: downloads outside the
folder lock, renames and records under it). No listing downloads them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterator, Optional, Sequence

import filelock

from gcs_sync.clock import Moment
from gcs_sync.drivers.base import FileStoreDriver, RemoteObject, Version
from gcs_sync.errors import StorageError, StoragePermissionDenied, failure_reason
from gcs_sync.listings import split_listing
from gcs_sync.sync.events import (
    Catalogued,
    ContentChangeEvent,
    LocalAdded,
    LocalChanged,
    LocalDeleted,
    RecordRead,
    RemoteAdded,
    RemoteChanged,
    Uncatalogued,
)
from gcs_sync.sync.feed import (
    FEED_FOLDER,
    WRITE_DELAY_ALLOWANCE,
    ChangeFeed,
    ChangeKind,
    FeedPosition,
    FeedRead,
    PositionFile,
)
from gcs_sync.sync.fill import FolderFill
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.heap import collector_paused, keep_long_lived, release_free_memory
from gcs_sync.sync.pending import PendingUploads
from gcs_sync.sync.plan import SyncPlan, plan_catalog, plan_sync
from gcs_sync.sync.records import RecordKeeper, RecordStore
from gcs_sync.sync.report import BucketMeter, SyncProgress, SyncReport, log_feed_check, log_sync
from gcs_sync.sync.settle import SettleWatch
from gcs_sync.sync.snapshot import Snapshot, SnapshotStore
from gcs_sync.sync.state import CATALOGUED, Listing, StateFile, SyncedFile
from gcs_sync.sync.tracked import TrackedState
from gcs_sync.sync.view import ViewRecord
from gcs_sync.sync.warn_once import OnceWarnings

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

Outcome = tuple[ContentChangeEvent, Optional[SyncedFile], Optional[StorageError]]
# A record version no store gives: "read the record again" (plan_sync and plan_catalog
# compare versions, and this one differs from every real one).
_UNKNOWN = Version("?unknown")
_BATCH_SIZE = 500
_BATCH_SECONDS = 0.2
# Seconds between two expiries of old feed entries by one process.
EXPIRY_PAUSE = 3600.0


def _only_added(read: FeedRead, name: str) -> bool:
    kinds = {entry.kind for entry in read.entries if entry.filename == name}
    return kinds == {ChangeKind.ADDED}


class _JournalBatch:
    """State entries written at most _BATCH_SECONDS or _BATCH_SIZE apart."""

    def __init__(self, state: StateFile) -> None:
        self._state = state
        self._entries: list[tuple[str, Optional[SyncedFile]]] = []
        self._since = time.monotonic()

    def add(self, name: str, entry: Optional[SyncedFile]) -> None:
        self._entries.append((name, entry))
        if len(self._entries) >= _BATCH_SIZE:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._entries and time.monotonic() - self._since >= _BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        entries, self._entries, self._since = self._entries, [], time.monotonic()
        self._state.record_many(entries)


class SyncEngine:
    def __init__(
        self,
        driver: FileStoreDriver,
        folder: PackageFolder,
        view: ViewRecord,
        lock: filelock.BaseFileLock,
        *,
        known_state: TrackedState,
        feed: ChangeFeed,
        positions: PositionFile,
        catalog: bool,
        settle: SettleWatch,
        pending: PendingUploads,
        stopping: threading.Event,
        full_sync_interval: float,
        push_local_changes: bool,
        concurrency: int,
        after_check: Callable[[bool], None],
        push_allowed: bool = True,
        fill_in_background: bool = False,
    ) -> None:
        self.driver = driver
        self.folder = folder
        self.records = RecordKeeper(RecordStore(driver), folder)
        self.state = view.state
        self._view = view
        self._lock = lock
        self._known_state = known_state
        self.feed = feed
        self._positions = positions
        self._snapshots = SnapshotStore(driver, feed.wall_clock)
        # PACKAGE_FILES cache or redirect: the state catalogues the bucket's files, which
        # are not held here (plan_catalog); mirror: every file here (plan_sync).
        self.catalog = catalog
        # A mirror server: a cold start from a catalog snapshot, and the files catalogued
        # but not held here brought by a thread of their own (the fill), never by a listing.
        self.fill_in_background = fill_in_background and not catalog
        self._fill = FolderFill(driver, folder, self.records.store, self.state, known_state, lock, stopping,
                                concurrency) if self.fill_in_background else None
        # An instance that may not write (a read-only role) does not expire the feed.
        self._write_refused = not push_allowed
        self._expired_at: Optional[float] = None  # time.monotonic() of the last expiry of old feed entries
        self._maintenance: Optional[threading.Thread] = None
        self._maintenance_lock = threading.Lock()
        self._settle = settle
        self._pending = pending
        self._stopping = stopping
        self._warnings = OnceWarnings()
        self.full_sync_interval = full_sync_interval
        self.push_local_changes = push_local_changes
        self.concurrency = concurrency
        # Run under the lock after every check of the bucket, told whether it listed the
        # bucket: for what follows the bucket at the sync's pace (the htpasswd object),
        # without a bucket call of its own per request.
        self._after_check = after_check

    def sync(self, progress: Optional[SyncProgress] = None) -> SyncReport:
        """List the bucket and sync now, whatever the interval; storage errors propagate."""
        with self._lock:
            began = Moment.now()
            return self.sync_locked(began, progress)

    def refresh_locked(self) -> Optional[SyncReport]:
        """``_refresh_locked``, then (a mirror server) the folder's fill if it has work."""
        report = self._refresh_locked()
        if self._fill is not None:
            if report is not None and any(isinstance(event, Catalogued) for event in report.applied):
                self._fill.want()
            self._fill.start_if_due()
        return report

    def _refresh_locked(self) -> Optional[SyncReport]:
        """One listing of the change feed from this instance's position, and a sync of only
        the files its new entries name. The whole bucket is listed instead if there is no
        position (a cold start), the last listing was incomplete, the periodic full listing
        is due (FULL_SYNC_INTERVAL: changes made straight in the bucket by other tools),
        the folder lost files, or the feed cannot say (entries expired, a bulk change)."""
        began = Moment.now()
        meter = BucketMeter(self.driver)
        position = self._positions.load()
        if position is None and (self.catalog or self.fill_in_background and not self.folder.scan()) \
                and not self._known_state.lookup_any():
            started = self._start_from_snapshot(began)
            if started is not None:
                # The snapshot's text and its parse are freed now, but the C allocator
                # would keep their pages (some 30 MB at 50,000 files) for good.
                release_free_memory()
                return started
        last = self._view.last_listing()
        listing_age = None if last is None else last.age()
        if (
            position is None
            or last is None
            or not last.complete
            or listing_age is None  # unknown (another boot, an older record): list
            or listing_age >= self.full_sync_interval
            or not self._folder_matches_state()
        ):
            return self.sync_locked(began)
        read = self.feed.read(position)
        if read.needs_listing:
            return self.sync_locked(began)
        report = self._apply_feed(read) if read.entries or read.position.retry else None
        # The position always moves on; a file whose change failed is tried again at each
        # check (by name: one call), not every entry since.
        failed = {event.name for event, _ in report.failed} | set(report.deferred) if report is not None else set()
        self._positions.save(read.position.with_retry(failed))
        self._after_check(read.users_changed)
        self._view.mark_checked(began)
        if report is None:
            log_feed_check(log, self.driver.url, meter)
        return report

    def _folder_matches_state(self) -> bool:
        """Whether every recorded file is still in the folder and the state is usable: a
        file deleted by hand or by a /tmp cleaner must not stay listed until the next
        full listing. Names only (no stat per file): O(files) in memory per interval."""
        if self.catalog:
            return not self.state.needs_snapshot  # no files here to lose
        present = set(os.listdir(self.folder.path))
        return self._known_state.all_in(present, except_catalogued=self.fill_in_background) \
            and not self.state.needs_snapshot

    def sync_locked(self, began: Moment, progress: Optional[SyncProgress] = None) -> SyncReport:
        started = time.monotonic()
        calls_before = sum(self.driver.calls.values())
        report = SyncReport()
        # Before the listing: every change after this point is read from the feed.
        position = self.feed.start(self._positions.load())
        # The listings and the plan build a few objects per file: a collection meanwhile
        # would scan them all while requests wait (heap.py), and so would the first one
        # after, if they were still alive. (A GCS listing's blobs are cyclic: those wait
        # for the collection after.) Not the transfers: those may take minutes, and make
        # garbage of their own.
        with collector_paused():
            local, remote, synced = self._gather(report)
            # Listed after the packages: a record written with a file is then never missed.
            records = self.records.store.list_versions(remote)
            plan = self._plan(local, remote, synced, records, report)
            del local, remote, records  # freed here, by reference counting
        state = self._apply_plan(plan, synced, report, progress)
        self._record(began, state, report)
        self._positions.save(position)
        self._maintain_after(position, state, complete=not report.failed and not report.deferred)
        keep_long_lived(len(state))
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        log_sync(log, self.driver.url, report)
        if not synced and len(report.applied) > 1:
            log.info("cold start: %d files from %s in %.2fs, %d transfers at a time",
                     len(report.applied), self.driver.url, report.seconds, self.concurrency)
        return report

    # -- a cold start from a catalog snapshot --------------------------------------------

    def _start_from_snapshot(self, began: Moment) -> Optional[SyncReport]:
        """A new catalog instance: the newest snapshot, then the feed since it; None if
        there is none (or it fails): then the bucket is listed. The first full listing is
        due once the snapshot is FULL_SYNC_INTERVAL old (changes made by other tools)."""
        started = time.monotonic()
        try:
            snapshot = self._snapshots.newest(self.feed.clock_skew, self.state)
        except StorageError as exc:
            log.warning("cold start from a catalog snapshot failed (%s): listing the bucket", exc)
            return None
        if snapshot is None:
            return None
        try:
            return self._start_from(snapshot, began, started)
        finally:
            snapshot.state.discard()  # the state file it was being written as, unless committed

    def _start_from(self, snapshot: Snapshot, began: Moment, started: float) -> Optional[SyncReport]:
        try:
            # Its age by the store's clock: entries since it may have expired if it is older
            # than the retention (less the window).
            age = max(self.feed.wall_clock() - snapshot.stored_at, 0.0)
            if age > self.feed.retention - self.feed.clock_skew - WRITE_DELAY_ALLOWANCE:
                log.info("catalog snapshot %s is %.0fs old, older than FEED_RETENTION allows: listing the bucket",
                         snapshot.name, age)
                return None
            read = self.feed.read(snapshot.position.anywhere())
        except StorageError as exc:
            log.warning("cold start from a catalog snapshot failed (%s): listing the bucket", exc)
            return None
        if read.needs_listing:
            return None
        snapshot.state.commit()
        self._known_state.adopt(snapshot.files, self.state.snapshot_cursor())
        report = self._apply_feed(read) if read.entries else SyncReport()
        self._positions.save(read.position.with_retry(event.name for event, _ in report.failed))
        # As old as the snapshot: the periodic full listing comes when its listing would have.
        listed = Moment(began.monotonic - age, began.boot)
        complete = not report.failed
        recorded = self.state.record_listing(None, listed, complete=complete)
        self._view.own_listing = None if recorded else Listing(None, time.time() - age, complete, listed)
        self._after_check(True)
        self._view.mark_checked(began)
        log.info("cold start: %d files from catalog snapshot %s (%.0fs old) and %d feed entries in %.2fs",
                 len(snapshot.files), snapshot.name, age, len(read.entries), time.monotonic() - started)
        return report

    def wait_for_fill(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a mirror's fill of its folder (tools, tests)."""
        return self._fill is None or self._fill.wait(timeout)

    # -- a sync of what the feed names -----------------------------------------------

    def _apply_feed(self, read: FeedRead) -> SyncReport:
        """Sync the files the feed's new entries name, each against the bucket's truth
        (entries are hints, in no reliable order): O(those files), never O(the bucket)."""
        started = time.monotonic()
        calls_before = sum(self.driver.calls.values())
        report = SyncReport()
        names = read.filenames()
        synced = self._known_state.lookup(names)
        if self.catalog:
            events = [event for name in sorted(names)
                      if (event := self._catalog_change(name, read, synced.get(name), report)) is not None]
            plan = SyncPlan(events, dict(synced), [])
        else:
            plan = self._mirror_changes(names, read, synced, report)
        self._apply_plan(plan, synced, report, None, partial=True)
        self._update_unservable(names, report)
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        log_sync(log, self.driver.url, report, listed=False)
        return report

    def _mirror_changes(self, names: set[str], read: FeedRead, synced: dict[str, SyncedFile],
                        report: SyncReport) -> SyncPlan:
        """The plan for the named files, from one ``stat`` each (and the folder)."""
        remote: dict[str, RemoteObject] = {}
        unknown: set[str] = set()
        for name in sorted(names):
            try:
                found = self.driver.stat(name)
            except StorageError as exc:
                report.failed.append((RemoteAdded(name, RemoteObject(name, Version(""), 0)), exc))
                unknown.add(name)
                continue
            if found is not None:
                remote[name] = found
        # Not planned at all (a file here whose stat failed is no file gone from the
        # bucket), and their entries kept as they are (below).
        names = names - unknown
        remote = self._servable(remote, {}, report)
        # An entry other than "added" may name a file of a multi-file upload still under way
        # (an "added" one is written only once its upload is done): hidden like a listing's.
        suspect = {name: obj for name, obj in remote.items() if not _only_added(read, name)}
        if suspect:
            hidden = self._pending.hide(suspect, synced)
            report.deferred.extend(sorted(hidden))
            remote = {name: obj for name, obj in remote.items() if name not in hidden}
            names = names - hidden
        local = {name: self.folder.fingerprint(name) for name in names if self.folder.file_path(name).is_file()}
        # The record of a file the feed says changed is read again; others' stay as synced.
        record_changed = {entry.filename for entry in read.entries if entry.kind is ChangeKind.RECORD}
        records: dict[str, Version] = {
            name: Version(synced[name].record_version or _UNKNOWN)
            if name in synced and name not in record_changed else _UNKNOWN
            for name in remote
        }
        # Not pushed from here: local changes are the full listing's to find.
        plan = plan_sync(local, remote, {name: entry for name, entry in synced.items() if name not in unknown},
                         push_local_changes=False, records=records, partial=True,
                         leave_catalogued=self.fill_in_background)
        kept = {name: synced[name] for name in unknown if name in synced}
        return dataclasses.replace(plan, base_state={**plan.base_state, **kept}) if kept else plan

    def _catalog_change(self, name: str, read: FeedRead, before: Optional[SyncedFile],
                        report: SyncReport) -> Optional[ContentChangeEvent]:
        """The change of one named file when files are not held here. A file the feed only
        says was added is read in one call (its record, which is written before the file
        and names the same bytes as the entry); anything else is checked with a ``stat``."""
        entries = [entry for entry in read.entries if entry.filename == name]
        kinds = {entry.kind for entry in entries}
        try:
            if kinds == {ChangeKind.ADDED}:
                newest = max(entries, key=lambda entry: entry.ms)
                found = self.records.store.read(name)
                record = None if found is None else found[0]
                if found is not None and record is not None and newest.sha16 is not None \
                        and record.sha256.startswith(newest.sha16) and record.filename == name:
                    version = found[1]
                    if before is not None and before.sha256 == record.sha256 and before.local_fingerprint == CATALOGUED:
                        if before.record_version == version:
                            return None  # already catalogued (our own upload, or an entry read twice)
                        return RecordRead(name, before.with_record(record, version))
                    # Its version is not known without a stat: the next full listing adds it.
                    return RecordRead(name, SyncedFile(Version(""), CATALOGUED, record.sha256, record, version))
            elif kinds == {ChangeKind.RECORD} and before is not None and before.record is not None:
                found = self.records.store.read(name)
                record = None if found is None else found[0]
                if found is not None and record is not None and record.sha256 == before.sha256:
                    return RecordRead(name, before.with_record(record, found[1]))
            remote = self.driver.stat(name)
        except StorageError as exc:
            report.failed.append((Catalogued(name, RemoteObject(name, Version(""), 0)), exc))
            return None
        if remote is None:
            return None if before is None else Uncatalogued(name)
        if not split_listing({name: remote})[0]:
            return None  # not a package file name (another tool's object): never served
        if before is None and name in self._pending.hide({name: remote}, {}):
            report.deferred.append(name)  # a multi-file upload still under way: hidden, tried again
            return None
        # The record is read again whatever the state says: the entry may be a yank.
        plan = plan_catalog({name: remote}, {} if before is None else {name: before}, {name: _UNKNOWN})
        return plan.events[0] if plan.events else None

    # -- gather ----------------------------------------------------------------------

    def _gather(
        self, report: SyncReport
    ) -> tuple[dict[str, str], dict[str, RemoteObject], dict[str, SyncedFile]]:
        """The folder's files, the bucket's (packages only, no upload under way) and the
        last-synced state."""
        self.folder.sweep_stale_temps()
        listing = self.driver.list_objects()
        synced = self._known_state.current()
        remote = self._servable(listing, synced, report)
        local = {} if self.catalog else self.folder.scan()  # cache/redirect: no files here
        remote = self._without_pending(remote, synced, report)
        return local, remote, synced

    def _servable(self, remote: dict[str, RemoteObject], known: dict[str, SyncedFile],
                  report: SyncReport) -> dict[str, RemoteObject]:
        kept, skipped = split_listing(remote, known)
        for name in skipped:
            report.skipped_names.append(name)
            self._warnings.odd_name(name, self.driver.url)
        return kept

    def _without_pending(
        self, remote: dict[str, RemoteObject], synced: dict[str, SyncedFile], report: SyncReport
    ) -> dict[str, RemoteObject]:
        """The listing without the files of multi-file uploads still under way (or dead and
        not yet expired), which are left for a later sync (pending.py)."""
        hidden = self._pending.hide(remote, synced)
        if hidden:
            log.info("not syncing %s yet: their upload has not finished", sorted(hidden))
            report.deferred.extend(sorted(hidden))
        return {name: obj for name, obj in remote.items() if name not in hidden}

    # -- plan ------------------------------------------------------------------------

    def _plan(
        self, local: dict[str, str], remote: dict[str, RemoteObject], synced: dict[str, SyncedFile],
        records: dict[str, Version], report: SyncReport,
    ) -> SyncPlan:
        if self.catalog:
            return plan_catalog(remote, synced, records)
        plan = plan_sync(local, remote, synced, push_local_changes=self.push_local_changes,
                         unsettled=self._unsettled(local, synced, report), records=records,
                         leave_catalogued=self.fill_in_background)
        if plan.state_reset:
            log.warning("%s is empty but its state lists %d files: starting from an empty state",
                        self.folder.path, len(synced))
        return plan

    def _unsettled(self, local: dict[str, str], synced: dict[str, SyncedFile], report: SyncReport) -> set[str]:
        """The local files a push would take that are still being written (settle.py)."""
        if not self.push_local_changes:
            return set()
        candidates = {
            name: here for name, here in local.items()
            if name not in synced or synced[name].local_fingerprint != here
        }
        unsettled = self._settle.unsettled(candidates)
        report.deferred.extend(sorted(unsettled))
        return unsettled

    # -- apply -----------------------------------------------------------------------

    def _apply_plan(
        self, plan: SyncPlan, synced: dict[str, SyncedFile], report: SyncReport, progress: Optional[SyncProgress],
        *, partial: bool = False,
    ) -> dict[str, SyncedFile]:
        """Apply the plan's events, recording each file's new state as it is done; return
        the whole state after them (``partial``: of the files planned only)."""
        if (plan.state_reset or self.state.needs_snapshot) and not partial:
            self.state.save(plan.base_state)  # before any event, so no later sync reads the old state
        else:
            for name in synced.keys() - plan.base_state.keys():  # gone from both sides
                self.state.record(name, None)
        self._warnings.local_only(plan.local_only, self.folder.path)
        if progress is not None:
            progress.planned(plan)
        state = dict(plan.base_state)
        # Recorded in small batches as they finish, so a worker killed mid-sync keeps what
        # it finished, and the workers' indexes show each file within a fraction of a
        # second; one journal write per file would cost a cold start more than the copies.
        batch = _JournalBatch(self.state)
        for outcome in self._apply(plan.events):
            if outcome is None:
                batch.flush_if_due()
                continue
            event, entry, error = outcome
            if progress is not None:
                progress.finished(event, error)
            if error is not None:
                report.failed.append((event, error))
                if not self._stopping.is_set():
                    log.error("sync: %s of %r failed: %s", type(event).__name__, event.name, error)
                continue
            report.applied.append(event)
            batch.add(event.name, entry)
            if entry is None:
                state.pop(event.name, None)
            else:
                state[event.name] = entry
        batch.flush()
        if self._stopping.is_set() and report.failed:
            log.warning("sync stopped early, the worker is exiting: %d of %d changes left for the next sync",
                        len(report.failed), len(plan.events))
        return state

    def _apply(self, events: Sequence[ContentChangeEvent]) -> Iterator[Optional[Outcome]]:
        """Apply each event's strategy, up to ``concurrency`` at a time; yield outcomes
        as they finish (in this thread, so only this thread writes the state)."""
        if self.concurrency <= 1 or len(events) <= 1:
            for event in events:
                yield (event, *self._apply_one(event))
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="gcs-sync") as pool:
            # A few in flight at a time, so each wait looks at a few futures, not 100,000.
            pending = iter(events)
            futures: dict[Future[tuple[Optional[SyncedFile], Optional[StorageError]]], ContentChangeEvent] = {}
            while True:
                while len(futures) < 2 * self.concurrency:
                    following = next(pending, None)
                    if following is None:
                        break
                    futures[pool.submit(self._apply_one, following)] = following
                if not futures:
                    return
                done, _ = wait(futures, timeout=_BATCH_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    yield (futures.pop(future), *future.result())
                if not done:
                    yield None  # a pause (slow transfers): time to record what is finished

    def _apply_one(self, event: ContentChangeEvent) -> tuple[Optional[SyncedFile], Optional[StorageError]]:
        if self._stopping.is_set():
            return None, StorageError(type(event).__name__, event.name, "not started: the worker is stopping")
        try:
            return event.apply(self), None
        except StorageError as exc:
            return None, exc
        except OSError as exc:
            return None, StorageError(type(event).__name__, event.name, f"local folder: {exc}")
        except Exception as exc:  # a bug: one file fails, the others' work is still recorded
            log.exception("sync: %s of %r failed unexpectedly", type(event).__name__, event.name)
            return None, StorageError(type(event).__name__, event.name, f"{type(exc).__name__}: {exc}")

    # -- record ----------------------------------------------------------------------

    def _record(self, began: Moment, state: dict[str, SyncedFile], report: SyncReport) -> None:
        """After the events: the feed entries of what was pushed, a compaction, the files
        that could not be fetched, the listing, and the check."""
        self._announce_pushed(report)
        if self.state.should_compact():
            self.state.compact(state)
        self._record_unservable(report, began)
        # An incomplete sync (a failure, files of a live upload deferred) is not a
        # baseline: the next check lists again. Kept here if the record can't be written
        # (a full disk), or every check would list.
        complete = not report.failed and not report.deferred
        recorded = self.state.record_listing(None, began, complete=complete)
        self._view.own_listing = None if recorded else Listing(None, time.time(), complete, began)
        self._after_check(True)
        self._view.mark_checked(began)

    def _announce_pushed(self, report: SyncReport) -> None:
        """Local changes pushed (PUSH_LOCAL_CHANGES) are changes to the bucket like any
        upload: one feed entry each."""
        for event in report.applied:
            if isinstance(event, (LocalAdded, LocalChanged)):
                entry = self._known_state.lookup([event.name]).get(event.name)
                self.feed.announce_quietly(ChangeKind.ADDED, event.name, None if entry is None else entry.sha256)
            elif isinstance(event, LocalDeleted):
                self.feed.announce_quietly(ChangeKind.REMOVED, event.name)

    def _maintain_after(self, position: FeedPosition, state: dict[str, SyncedFile], *, complete: bool) -> None:
        """After a full listing, by an instance that may write: a catalog snapshot and the
        expiry of old feed entries, in a thread of their own (one at a time), so neither
        holds the folder lock (uploads wait for it) nor delays the check."""
        if self._write_refused:
            return
        with self._maintenance_lock:
            if self._maintenance is not None and self._maintenance.is_alive():
                return  # the last one is still at work: this listing's turn is skipped
            self._maintenance = threading.Thread(
                target=self._after_full_listing, args=(position, state), kwargs={"complete": complete},
                name="gcs-sync-maintenance", daemon=True,
            )
            self._maintenance.start()

    def wait_for_maintenance(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the snapshot and expiry after the last full
        listing (for tools and tests); True once none is under way."""
        with self._maintenance_lock:
            thread = self._maintenance
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def _after_full_listing(self, position: FeedPosition, state: dict[str, SyncedFile], *, complete: bool) -> None:
        """A catalog snapshot if one is due (only of a complete listing), and the expiry
        of old feed entries, at most once per EXPIRY_PAUSE per process (it lists the whole
        feed)."""
        if complete:
            try:
                self._snapshots.write_if_due(position, state)
            except StoragePermissionDenied as exc:
                self._write_refused = True
                log.info("this instance may not write catalog snapshots (%s): new instances read every record", exc)
                return
            except StorageError as exc:
                log.warning("could not write a catalog snapshot (%s); the next full listing tries again", exc)
        if self._expired_at is not None and time.monotonic() - self._expired_at < min(
                EXPIRY_PAUSE, self.feed.retention / 4):
            return
        self._expired_at = time.monotonic()
        try:
            self.feed.expire()
        except StoragePermissionDenied as exc:
            self._write_refused = True
            log.info("this instance may not delete old change-feed entries (%s): another instance, or a lifecycle "
                     "rule on %s, has to", exc, FEED_FOLDER)
        except StorageError as exc:
            log.warning("could not expire old change-feed entries (%s); the next full listing tries again", exc)

    def _update_unservable(self, names: set[str], report: SyncReport) -> None:
        """After a sync of named files: those it could not bring here join the files
        readiness reports; those it brought leave them (a full listing rewrites the list)."""
        if self._stopping.is_set():
            return
        unrecorded = self._view.unrecorded_unservable  # a full disk: what this process could not record
        before = {**self.state.unservable(), **({} if unrecorded is None else unrecorded[1])}
        failed = {event.name: {"error": str(error), "reason": failure_reason(error)}
                  for event, error in report.failed if isinstance(event, (RemoteAdded, RemoteChanged, Catalogued))}
        if not failed and not (names & before.keys()):
            return
        unservable = {name: why for name, why in before.items() if name not in names} | failed
        if self.state.record_unservable(unservable):
            self._view.unrecorded_unservable = None
        else:
            self._view.unrecorded_unservable = (Moment.now(), unservable)

    def _record_unservable(self, report: SyncReport, began: Moment) -> None:
        """The bucket's files that this sync could not bring here: readiness reports them
        (``status``) until a later listing fetches them."""
        if self._stopping.is_set():
            return  # skipped, not failed: the next worker's sync fetches them
        unservable = {
            event.name: {"error": str(error), "reason": failure_reason(error)}
            for event, error in report.failed
            if isinstance(event, (RemoteAdded, RemoteChanged))
        }
        recorded = self.state.record_unservable(unservable)
        self._view.unrecorded_unservable = None if recorded else (began, unservable)
