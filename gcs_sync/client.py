"""StorageClient: keeps one local package folder converged on the bucket.

A sync gathers three listings (bucket, folder, last-synced state), plans with the pure
``plan_sync``, applies each event's strategy, and records each file's new state as soon
as it is done. Everything that changes the folder or the state happens under an
inter-process file lock, so gunicorn workers sharing one folder never race; bucket
transfers for a request's own upload or removal happen outside it.

Freshness costs O(changes), not O(requests): at most once per SYNC_INTERVAL per instance
a worker reads the bucket's change marker (one metadata request), which every upload and
removal rewrites; only if it moved, or every FULL_SYNC_INTERVAL (changes made straight
in the bucket by other tools), is the bucket listed.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator, Optional, Protocol, Sequence

import filelock

from .breaker import WriteBreaker
from .drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject, StoredObject
from .errors import ObjectChanged, ObjectExists, StorageError, StoragePermissionDenied, StorageUnavailable
from .events import ContentChangeEvent, LocalAdded, LocalChanged, LocalDeleted
from .folder import PackageFolder, StagedFile
from .logs import BucketMeter, log_bucket_write, log_marker_check, log_sync
from .names import is_package_filename
from .pending import DEFAULT_EXPIRY, Intent, PendingUploads
from .plan import SyncPlan, plan_sync
from .settle import SETTLE_SECONDS, SettleWatch
from .state import StateFile, SyncedFile, TrackedState

log = logging.getLogger(__name__)

# Once the bucket has a request's change, placing it in the folder is only a convenience
# (the next sync does it anyway), so the request does not wait long for the lock.
_LOCK_WAIT_AFTER_WRITE = 2.0


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
        create_marker: bool = True,
        storage_timeout: float = 10.0,
        settle_seconds: float = SETTLE_SECONDS,
        pending_expiry: float = DEFAULT_EXPIRY,
    ) -> None:
        self.driver = driver
        self.folder = folder
        self.sync_interval = sync_interval
        self.full_sync_interval = full_sync_interval
        self.push_local_changes = push_local_changes
        self.concurrency = concurrency
        # Run under the lock after every check of the bucket, told whether it listed the
        # bucket: for what follows the bucket at the sync's pace (the htpasswd object),
        # without a bucket call of its own per request.
        self._after_check = after_check or (lambda listed: None)
        self.state = StateFile(folder.control, driver.url)
        self._lock = filelock.FileLock(str(folder.control / "lock"), timeout=lock_timeout)
        self._failed_at: Optional[float] = None
        self._reported_odd_names: set[str] = set()
        self._reported_local_only: set[str] = set()
        # False: a sync never writes to the bucket, not even a missing change marker.
        self._marker_write_refused = not create_marker
        self._stopping = threading.Event()
        # The synced state as last read, kept current by reading only what changed.
        self._known_state = TrackedState(self.state)
        self._breaker = WriteBreaker(folder.control, storage_timeout)
        self._settle = SettleWatch(settle_seconds)
        self._pending = PendingUploads(driver, pending_expiry)
        self._created = time.monotonic()
        # Seconds from start to this process's first view known to be current.
        self.ready_after: Optional[float] = None
        self._warm_up: Optional[threading.Thread] = None
        self._warm_up_lock = threading.Lock()

    # -- pulling ---------------------------------------------------------------------

    def ensure_fresh(self) -> None:
        """Bring the folder up to date if no worker has checked it within the interval.
        Never raises for a storage or folder failure: reads go on from the local copy,
        and it is logged."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.sync_interval:
            return  # the bucket just failed, or a long sync holds the lock: don't wait again
        if self._is_fresh():
            return
        try:
            with self._lock:
                if not self._is_fresh():  # a sibling worker may have checked while we waited
                    self._refresh_locked()
            self._failed_at = None
            self.state.clear_failure()
            self._note_ready()
        except filelock.Timeout:
            # A long sync (a cold start) is under way: don't make every request wait for it.
            self._failed_at = time.monotonic()
            log.warning("sync skipped: another worker has held %s for %.0fs; serving the local copy",
                        self._lock.lock_file, self._lock.timeout)
        except (StorageError, OSError) as exc:
            self._failed_at = time.monotonic()
            self.state.record_failure(f"sync from {self.driver.url} failed: {exc}")
            log.error("sync from %s failed, serving the local copy: %s", self.driver.url, exc)

    def status(self) -> dict[str, object]:
        """What readiness reports, for this instance (its workers share the folder):
        "starting" until a first sync has listed the bucket, "degraded" while the last
        attempt to reach the bucket failed (reads go on from the local copy), else "ok"."""
        last_listing = self.state.last_listing()
        failure = self.state.last_failure()
        if failure is not None and isinstance(failure.get("at"), (int, float)):
            failure = {**failure, "at": _rfc3339(failure["at"])}
        age = self.state.pulled_age()
        if last_listing is None:
            status = "starting"
        elif failure is not None:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "backend": self.driver.url,
            # When the folder was last known to match the bucket, and how long ago.
            "last_sync": None if age is None else _rfc3339(time.time() - age),
            "lag_seconds": None if age is None else round(age, 3),
            "last_error": failure,
        }

    def start_warm_up(self, then: Callable[[], None] = lambda: None) -> threading.Thread:
        """Bring the folder up to date in the background, then call ``then`` (build the
        worker's index), so that a new instance is ready before (or soon after) its first
        request; requests meanwhile serve what is there. A call while one is under way
        returns that one (a failed check is retried only after SYNC_INTERVAL anyway)."""

        def warm_up() -> None:
            self.ensure_fresh()
            then()

        with self._warm_up_lock:
            if self._warm_up is None or not self._warm_up.is_alive():
                self._warm_up = threading.Thread(target=warm_up, name="gcs-sync-warm-up", daemon=True)
                self._warm_up.start()
            return self._warm_up

    def wait_until_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this instance's first sync (this worker's
        warm-up, or a sibling's if that one holds the lock); True once it is done."""
        deadline = time.monotonic() + timeout
        warm_up = self._warm_up
        if warm_up is not None:
            warm_up.join(timeout)
        while self.state.last_listing() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.2, remaining))  # a sibling's cold start: its state file tells
        return True

    def sync(self, progress: Optional[SyncProgress] = None) -> SyncReport:
        """List the bucket and sync now, whatever the interval; storage errors propagate."""
        with self._lock:
            checked_at = time.time()
            return self._sync_locked(self.driver.marker_version(), checked_at, progress)

    def _is_fresh(self) -> bool:
        age = self.state.pulled_age()
        return age is not None and age < self.sync_interval

    def _refresh_locked(self) -> Optional[SyncReport]:
        """One metadata read of the change marker; a full listing only if it moved, the
        last listing was incomplete, or the periodic full listing is due (that one catches
        changes made straight in the bucket by other tools)."""
        checked_at = time.time()
        meter = BucketMeter(self.driver)
        marker = self.driver.marker_version()  # read before listing: a later change moves it again
        last = self.state.last_listing()
        if (
            marker is not None  # no marker (yet), or no bucket: only a listing can tell
            and last is not None
            and last.complete
            and last.marker == marker
            and checked_at - last.listed_at < self.full_sync_interval
            and self._folder_matches_state()
        ):
            self._after_check(False)
            self.state.mark_pulled(checked_at)
            log_marker_check(log, self.driver.url, meter)
            return None
        return self._sync_locked(marker, checked_at)

    def _folder_matches_state(self) -> bool:
        """Whether every recorded file is still in the folder and the state is usable: a
        file deleted by hand or by a /tmp cleaner must not stay listed until the next
        full listing. Names only (no stat per file): O(files) in memory per interval."""
        recorded = self._known_state.refresh()
        if self.state.needs_snapshot:
            return False
        return recorded.keys() <= set(os.listdir(self.folder.path))

    def _sync_locked(
        self, marker: Optional[str], checked_at: float, progress: Optional[SyncProgress] = None
    ) -> SyncReport:
        started = time.monotonic()
        calls_before = sum(self.driver.calls.values())
        report = SyncReport()
        self.folder.sweep_stale_temps()
        remote = self._servable(self.driver.list_objects(), report)
        local = self.folder.scan()
        synced = self.state.load()
        remote = self._without_pending(remote, synced, report)
        plan = plan_sync(local, remote, synced, push_local_changes=self.push_local_changes,
                         unsettled=self._unsettled(local, synced, report))
        if plan.state_reset:
            log.warning("%s is empty but its state lists %d files: starting from an empty state",
                        self.folder.path, len(synced))
        if plan.state_reset or self.state.needs_snapshot:
            self.state.save(plan.base_state)  # before any event, so no later sync reads the old state
        else:
            for name in synced.keys() - plan.base_state.keys():  # gone from both sides
                self.state.record(name, None)
        self._report_local_only(plan.local_only)
        if progress is not None:
            progress.planned(plan)
        state = dict(plan.base_state)
        for event, entry, error in self._apply(plan.events):
            if progress is not None:
                progress.finished(event, error)
            if error is not None:
                report.failed.append((event, error))
                if not self._stopping.is_set():
                    log.error("sync: %s of %r failed: %s", type(event).__name__, event.name, error)
                continue
            report.applied.append(event)
            # Recorded at once, so a worker killed mid-sync keeps what it finished, and
            # the workers' indexes show each file as soon as it is complete.
            self.state.record(event.name, entry)
            if entry is None:
                state.pop(event.name, None)
            else:
                state[event.name] = entry
        if self._stopping.is_set() and report.failed:
            log.warning("sync stopped early, the worker is exiting: %d of %d changes left for the next sync",
                        len(report.failed), len(plan.events))
        if any(isinstance(event, (LocalAdded, LocalChanged, LocalDeleted)) for event in report.applied):
            self._announce_change()
        elif marker is None:
            self._create_marker()
        if self.state.should_compact():
            self.state.save(state)
        # An incomplete sync is not a baseline: the next check lists again to retry.
        self.state.record_listing(marker, checked_at, complete=not report.failed and not report.deferred)
        self._after_check(True)
        self.state.mark_pulled(checked_at)
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        log_sync(log, self.driver.url, report)
        if not synced and len(report.applied) > 1:
            log.info("cold start: %d files from %s in %.2fs, %d transfers at a time",
                     len(report.applied), self.driver.url, report.seconds, self.concurrency)
        return report

    def _apply(
        self, events: Sequence[ContentChangeEvent]
    ) -> Iterator[tuple[ContentChangeEvent, Optional[SyncedFile], Optional[StorageError]]]:
        """Apply each event's strategy, up to ``concurrency`` at a time; yield outcomes
        as they finish (in this thread, so only this thread writes the state)."""
        if self.concurrency <= 1 or len(events) <= 1:
            for event in events:
                yield (event, *self._apply_one(event))
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="gcs-sync") as pool:
            futures = {pool.submit(self._apply_one, event): event for event in events}
            for future in as_completed(futures):
                yield (futures[future], *future.result())

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

    def stop(self) -> None:
        """Let a sync under way finish the transfers in flight and skip the rest, so a
        worker asked to exit during a long cold start does so promptly."""
        self._stopping.set()

    def _note_ready(self) -> None:
        if self.ready_after is None:
            self.ready_after = time.monotonic() - self._created
            log.info("ready: %s is current with %s, %.2fs after start", self.folder.path, self.driver.url,
                     self.ready_after)

    def _create_marker(self) -> None:
        """A bucket filled by other tools has no marker: write one, so later checks can
        skip the listing. It is recorded as unseen, so the next check lists once more."""
        if self._marker_write_refused:
            return
        try:
            self.driver.touch_marker()
        except StorageError as exc:
            # Read-only credentials won't change; anything else is retried at the next sync.
            self._marker_write_refused = isinstance(exc, StoragePermissionDenied)
            log.warning("could not create the change marker (%s); until it exists, every check "
                        "(SYNC_INTERVAL) lists the bucket", exc)

    def _announce_change(self) -> None:
        """Rewrite the change marker so other instances list the bucket at their next check."""
        try:
            self.driver.touch_marker()
        except StorageError as exc:
            log.error("could not rewrite the change marker after a change to the bucket (%s): other instances "
                      "see that change at their next full listing (FULL_SYNC_INTERVAL)", exc)

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

    def _report_local_only(self, names: list[str]) -> None:
        for name in names:
            if name not in self._reported_local_only:
                self._reported_local_only.add(name)
                log.warning("%r is in %s but not in the bucket; it is not uploaded (PUSH_LOCAL_CHANGES is off)",
                            name, self.folder.path)

    def _servable(self, remote: dict[str, RemoteObject], report: SyncReport) -> dict[str, RemoteObject]:
        kept = {}
        for name, obj in remote.items():
            if is_package_filename(name):
                kept[name] = obj
                continue
            report.skipped_names.append(name)
            if name not in self._reported_odd_names:  # once per process, not every interval
                self._reported_odd_names.add(name)
                log.warning("skipping bucket object %r under %s: not a package filename", name, self.driver.url)
        return kept

    # -- a request's own changes -----------------------------------------------------

    def publish(self, staged: Sequence[StagedFile], *, overwrite: bool) -> list[StoredObject]:
        """Store a request's uploads in the bucket (create-only unless ``overwrite``), then
        make them all visible locally at once. All or none, as far as the bucket allows:
        if one fails, the create-only uploads already made are deleted again; what could
        not be undone is in the error's ``changed_before_failure``. Raises ObjectExists or
        another StorageError; the caller removes the staged files in every case. Once the
        bucket has the files the upload counts as done: a local problem after that only
        delays this folder until its next sync."""
        stored: list[StoredObject] = []
        known = {} if overwrite else self._known_state.refresh()
        self._breaker.check(staged[0].name)
        # Several files: an intent names them first, so a request killed between its
        # writes leaves nothing that a sync serves as a release (pending.py).
        intent: Optional[Intent] = None
        try:
            if len(staged) > 1 and not overwrite:
                intent = self._pending.begin(staged)
            for upload in staged:
                here = known.get(upload.name)
                if here is not None and here.sha256 != upload.sha256:
                    # This folder's view may be stale (removed through another instance):
                    # only the bucket may say "exists", so ask it (one metadata read).
                    self._refuse_if_stored_otherwise(upload)
                meter = BucketMeter(self.driver)
                remote = self.driver.upload(
                    upload.name, upload.path, create_only=not overwrite, metadata={SHA256_KEY: upload.sha256},
                    token=None if intent is None else intent.token(upload.name),
                )
                stored.append(remote)
                log_bucket_write(log, "store", upload.name, self.driver.url, meter,
                                 version=remote.version, size=upload.size)
            for remote in stored:
                if not remote.created:  # about to be covered by our 200: no clean-up may take it
                    self._pending.adopt(remote.upload_token, intent)
            if intent is not None:
                self._pending.end(intent)  # before the 200; if it fails, the files are undone
        except StorageError as exc:
            self._note_write_outcome(exc)
            exc.changed_before_failure = [r.name for r in stored if r.created] if overwrite else self._undo(stored)
            if intent is not None and not exc.changed_before_failure:
                self._end_quietly(intent)  # else it stays: once expired, a sync removes what stayed
            # Even undone, the objects existed for a while (another instance may have
            # listed them): let everyone look. Not after a write the bucket did not
            # answer and nothing stored: the marker write would wait a whole budget
            # again on a bucket that just failed; if that write landed late, other
            # instances see it at their next full listing.
            if any(r.created for r in stored):
                self._announce_change()
            raise
        self._breaker.answered()
        self._announce_change()
        try:
            with self._lock.acquire(timeout=_LOCK_WAIT_AFTER_WRITE):
                for upload, remote in zip(staged, stored):
                    local = self.folder.install(upload.path, upload.name)
                    self.state.record(upload.name, SyncedFile(remote.version, local, upload.sha256))
        except filelock.Timeout:
            log.warning("%s in the bucket but the folder lock was busy; they appear here on the next sync",
                        [u.name for u in staged])
        except OSError as exc:
            log.error("%s in the bucket but could not be placed in %s (%s); the next sync retries",
                      [u.name for u in staged], self.folder.path, exc)
        return stored

    def _end_quietly(self, intent: Intent) -> None:
        try:
            self._pending.end(intent)
        except StorageError as exc:
            log.warning("could not delete the intent of a failed upload (%s); a sync removes it once it expires", exc)

    def _note_write_outcome(self, exc: StorageError) -> None:
        """Open the write breaker if the bucket did not answer; close it if it did."""
        if isinstance(exc, StorageUnavailable):
            self._breaker.failed(exc)
        else:
            self._breaker.answered()

    def _refuse_if_stored_otherwise(self, upload: StagedFile) -> None:
        """Raise ObjectExists if the bucket holds ``upload``'s name with other content.
        Asked before the first write, so a request of several files that would meet a
        conflict writes nothing; the create-only write still decides every race."""
        there = self.driver.stat(upload.name)
        # No sha256 there (a folder keeps no metadata; another tool wrote it): the
        # create-only write decides, comparing the bytes if it meets the object.
        if there is not None and there.sha256 is not None and there.sha256 != upload.sha256:
            raise ObjectExists("upload", upload.name, "an object of this name, with other content, is in the bucket")

    def _undo(self, stored: list[StoredObject]) -> list[str]:
        """Delete the objects this request created, each only at the version it created
        (a conditional delete: whatever replaced it since is kept); never an object it
        found already there (``created=False``: the same bytes, another request's).
        Return the names of those that stayed."""
        stayed = []
        for remote in stored:
            if not remote.created:
                continue
            try:
                self.driver.delete(remote.name, if_version=remote.version)
                log.info("undid the upload of %r: its request failed", remote.name)
            except ObjectChanged:
                log.info("not undoing the upload of %r: replaced since, by another writer", remote.name)
            except StorageError as exc:
                stayed.append(remote.name)
                log.error("could not undo the upload of %r after its request failed: %s", remote.name, exc)
        return stayed

    def retract(self, names: Sequence[str]) -> None:
        """Delete files from the bucket, then from the folder. Raises StorageError, whose
        ``changed_before_failure`` lists the files already deleted (deletes can't be undone)."""
        removed: list[str] = []
        self._breaker.check(names[0])
        try:
            for name in names:
                meter = BucketMeter(self.driver)
                self.driver.delete(name)
                removed.append(name)
                log_bucket_write(log, "delete", name, self.driver.url, meter)
            self._breaker.answered()
        except StorageError as exc:
            self._note_write_outcome(exc)
            exc.changed_before_failure = list(removed)
            raise
        finally:
            # Only if something was deleted: after a delete the bucket did not answer,
            # the marker write would wait a whole budget again (a late delete is seen at
            # the next full listing).
            if removed:
                self._announce_change()
            self._remove_locally(removed)

    def _remove_locally(self, names: list[str]) -> None:
        if not names:
            return
        try:
            with self._lock.acquire(timeout=_LOCK_WAIT_AFTER_WRITE):
                for name in names:
                    self.folder.remove(name)
                    self.state.record(name, None)
        except filelock.Timeout:
            log.warning("%s gone from the bucket but the folder lock was busy; they go on the next sync", names)
        except OSError as exc:
            log.error("%s gone from the bucket but could not be removed from %s (%s); the next sync retries",
                      names, self.folder.path, exc)


def _rfc3339(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds")
