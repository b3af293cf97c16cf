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

import datetime
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import filelock

from gcs_sync.sync.breaker import WriteBreaker
from gcs_sync.clock import Moment
from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject, StoredObject
from gcs_sync.errors import (
    ObjectChanged,
    ObjectExists,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
    failure_reason,
)
from gcs_sync.sync.events import ContentChangeEvent, LocalAdded, LocalChanged, LocalDeleted, RemoteAdded, RemoteChanged
from gcs_sync.sync.folder import PackageFolder, StagedFile
from gcs_sync.sync.report import BucketMeter, SyncProgress, SyncReport, log_bucket_write, log_marker_check, log_sync
from gcs_sync.names import is_package_filename
from gcs_sync.sync.pending import DEFAULT_EXPIRY, Intent, PendingUploads
from gcs_sync.sync.plan import plan_sync
from gcs_sync.sync.settle import SETTLE_SECONDS, SettleWatch
from gcs_sync.sync.state import Listing, StateFile, SyncedFile, TrackedState

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

_T = TypeVar("_T")

# Once the bucket has a request's change, placing it in the folder is only a convenience
# (the next sync does it anyway), so the request does not wait long for the lock.
_LOCK_WAIT_AFTER_WRITE = 2.0
# A view this many SYNC_INTERVALs old (at least that many seconds) means the checker has
# not run: the next read checks itself (see ``ensure_fresh``).
_STALLED_INTERVALS = 3
# The checker's shortest pause, so SYNC_INTERVAL=0 does not spin.
_MIN_CHECKER_PAUSE = 1.0
_TAKEN_FOR_ABANDONED = "this upload took so long that it was taken for an abandoned one and removed. Try again"
# Readiness names at most this many of the files it cannot serve (to the operator only).
_UNSERVABLE_NAMES_SHOWN = 20


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
        # This process's last check that found the folder current (see ``_view_age``).
        self._checked: Optional[Moment] = None
        self._check_ended: Optional[float] = None  # time.monotonic() when it ended
        # What this process could not record for its siblings (a full disk), for its own readiness.
        self._unrecorded_failure: Optional[tuple[Moment, dict[str, object]]] = None
        self._unrecorded_unservable: Optional[tuple[Moment, dict[str, dict[str, str]]]] = None
        # The last listing as this process made it (see ``_last_listing``).
        self._own_listing: Optional[Listing] = None
        # The checker thread (``start_warm_up``), what wakes it, and a one-off check for
        # an app run without it; checks finished so far, for those who wait for one.
        self._checker: Optional[threading.Thread] = None
        self._one_check: Optional[threading.Thread] = None
        self._check_wanted = False
        self._checker_lock = threading.Lock()
        self._wake = threading.Event()
        self._checks_done = threading.Condition()
        self._checks_completed = 0

    # -- pulling ---------------------------------------------------------------------

    def ensure_fresh(self) -> None:
        """What every read asks. Reads never wait for a listing: the instance's checker
        thread (``start_checking``) looks at the bucket every SYNC_INTERVAL, and a read
        that finds the view older than that only wakes it and is served the last complete
        view meanwhile. A read waits for a check in two cases only: a cold start (nothing
        listed yet on this folder: nothing to serve), and a view so old that no check can
        have run for a while (``_checks_stalled``: an instance whose CPU is throttled
        between requests), and then only if no other check holds the folder. Never
        raises: failures are logged and recorded."""
        if self.is_fresh():
            return
        if self._last_listing() is None:
            self.refresh_now()
        elif self._checks_stalled():
            self.refresh_now(lock_wait=0)  # a check already under way elsewhere: don't wait
        else:
            self._wake_checker()

    def refresh_now(self, lock_wait: Optional[float] = None) -> None:
        """One check, in the caller's thread: a marker read, and a listing only if
        something changed (see ``_refresh_locked``). For the checker thread, a cold start,
        and a write that needs the current view (a removal of a file this worker has not
        seen). ``lock_wait``: how long to wait for the folder lock (default
        STORAGE_TIMEOUT). Never raises for a storage or folder failure: reads go on from
        the local copy, and it is logged."""
        try:
            self._refresh_now(lock_wait)
        finally:
            # Counted whether it looked at the bucket or found it need not (fresh, or
            # backing off after a failure): either way the view is as current as it gets.
            with self._checks_done:
                self._checks_completed += 1
                self._checks_done.notify_all()

    def _refresh_now(self, lock_wait: Optional[float]) -> bool:
        """The check; False if none was made (a back-off, a view made fresh meanwhile, or
        the lock held elsewhere with ``lock_wait`` 0)."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.sync_interval:
            return False  # the bucket just failed, or a long sync holds the lock: don't wait again
        if self.is_fresh():
            return False
        try:
            with self._lock.acquire(timeout=lock_wait):
                if self.is_fresh():  # a sibling worker checked while we waited
                    return False
                self._refresh_locked()
            self._failed_at = None
            self._unrecorded_failure = None
            self.state.clear_failure()
            self._note_ready()
        except filelock.Timeout:
            if lock_wait == 0:
                return False  # another worker is checking: its result comes to every reader
            # A long sync (a cold start) is under way: don't make every request wait for it.
            self._failed_at = time.monotonic()
            log.warning("sync skipped: another worker has held %s for %.0fs; serving the local copy",
                        self._lock.lock_file, self._lock.timeout)
        except (StorageError, OSError) as exc:
            self._failed_at = time.monotonic()
            message, reason = f"sync from {self.driver.url} failed: {exc}", failure_reason(exc)
            log.error("sync from %s failed, serving the local copy: %s", self.driver.url, exc)
            if not self.state.record_failure(message, reason=reason):
                # A full disk: this worker's readiness still tells (its siblings can't know).
                self._unrecorded_failure = (Moment.now(), {"error": message, "at": time.time(), "reason": reason})
        return True

    def _checks_stalled(self) -> bool:
        """Whether no worker of this instance has even tried a check for far longer than
        the checker would wait: the process was frozen between requests (Cloud Run and App
        Engine may throttle the CPU of an idle instance), or the folder was just restored.
        A failed attempt counts as one (a bucket outage is not a stall: reads must not
        take turns waiting on a bucket that does not answer)."""
        own_failure = None if self._failed_at is None else time.monotonic() - self._failed_at
        own_end = None if self._check_ended is None else time.monotonic() - self._check_ended
        # Since a check ended, not since it began: a slow listing is not a stall.
        ages = [age for age in (self.state.check_idle_age(), own_end, self.state.failure_age(), own_failure)
                if age is not None]
        return not ages or min(ages) > self._stall_seconds()

    def _stall_seconds(self) -> float:
        return _STALLED_INTERVALS * max(self.sync_interval, 1.0)

    def _last_listing(self) -> Optional[Listing]:
        """The last full listing: the shared record, or this process's own if that could
        not be written (a full disk) and is newer."""
        shared, own = self.state.last_listing(), self._own_listing
        if own is None:
            return shared
        if shared is None:
            return own
        shared_age, own_age = shared.age(), own.age()
        return own if shared_age is None or (own_age is not None and own_age < shared_age) else shared

    def status(self) -> dict[str, object]:
        """What readiness reports, for this instance (its workers share the folder):
        "starting" until a first sync has listed the bucket; "degraded" while the last
        attempt to reach the bucket failed (reads go on from the local copy) or files of
        the bucket could not be fetched (they answer 404 here), with how many and why;
        else "ok". Names, paths and messages are in ``details``, for the operator only."""
        last_listing = self._last_listing()
        age = self._view_age()
        failure = self.state.last_failure() or self._not_superseded(self._unrecorded_failure)
        unservable = self.state.unservable() or self._not_superseded(self._unrecorded_unservable) or {}
        # How old the view may be while the checks go well: the checker's interval, one
        # check that takes its whole budget, and the margin of a stalled one.
        stale = age is not None and age > self._stall_seconds() + self._lock.timeout
        if last_listing is None or age is None:
            status = "starting"  # nothing listed, or no check yet since this machine booted
        elif failure is not None or unservable or stale:
            status = "degraded"
        else:
            status = "ok"
        reasons = sorted({str(entry.get("reason", "error")) for entry in unservable.values()})
        if failure is not None:
            reasons.insert(0, str(failure.get("reason") or "error"))
        elif stale and last_listing is not None:
            reasons.insert(0, "stale view")  # the checks stopped: a hung one, a stuck sibling
        if failure is not None and isinstance(failure.get("at"), (int, float)):
            failure = {**failure, "at": _rfc3339(failure["at"])}
        return {
            "status": status,
            # When the folder was last known to match the bucket, and how long ago.
            "last_sync": None if age is None else _rfc3339(time.time() - age),
            "lag_seconds": None if age is None else round(age, 3),
            "unservable_files": len(unservable),
            "reason": "; ".join(dict.fromkeys(reasons)) or None,
            "details": {
                "backend": self.driver.url,
                "last_error": None if failure is None else {
                    k: v for k, v in failure.items() if k in ("error", "at")
                },
                # A few names are enough to act on; the log has every one.
                "unservable": dict(sorted(unservable.items())[:_UNSERVABLE_NAMES_SHOWN]),
            },
        }

    def _not_superseded(self, unrecorded: Optional[tuple[Moment, _T]]) -> Optional[_T]:
        """What this process could not record for its siblings (``_unrecorded_*``, with
        when), unless a sibling has found the folder current since: then it no longer holds."""
        if unrecorded is None:
            return None
        moment, payload = unrecorded
        since, checked = moment.age(), self.state.pulled_age()
        if since is not None and checked is not None and checked < since:
            return None
        return payload

    def start_warm_up(self, then: Callable[[], None] = lambda: None) -> threading.Thread:
        """Start this worker's checker thread (once): a first check at once, then ``then``
        (build the worker's index), so that a new instance is ready before (or soon after)
        its first request; then a check whenever the view is SYNC_INTERVAL old or a read
        wakes it. Requests meanwhile serve what is there."""
        with self._checker_lock:
            if self._checker is None or not self._checker.is_alive():
                self._checker = threading.Thread(
                    target=self._run_checker, args=(then,), name="gcs-sync-checker", daemon=True,
                )
                self._checker.start()
            return self._checker

    def _run_checker(self, then: Callable[[], None]) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                self.refresh_now()
                if first:
                    then()
                    first = False
            except Exception:  # a bug: logged here, since no request would see it; back off
                self._failed_at = time.monotonic()
                log.exception("background check of %s failed unexpectedly", self.driver.url)
            if self._failed_at is not None:
                # After a failure, nothing before the back-off ends: not even a read's wake.
                self._stopping.wait(max(self._failed_at + self.sync_interval - time.monotonic(), 0))
            # Until the view is SYNC_INTERVAL old (a sibling's check counts), or a read
            # finds it old and wakes us; at most once a second by itself (SYNC_INTERVAL=0
            # means "check at every read", not "spin").
            age = self._view_age()
            due = self.sync_interval - age if age is not None else self.sync_interval
            self._wake.wait(timeout=max(due, _MIN_CHECKER_PAUSE))
            self._wake.clear()

    def _wake_checker(self) -> None:
        """A read found the view old: have a check run in the background. Without a
        checker thread (the app used outside gunicorn's hooks), a thread of its own runs
        checks while reads keep asking for them."""
        checker = self._checker
        if checker is not None and checker.is_alive():
            self._wake.set()
            return
        with self._checker_lock:
            self._check_wanted = True
            if self._one_check is None:
                self._one_check = threading.Thread(target=self._run_wanted_checks, name="gcs-sync-check", daemon=True)
                self._one_check.start()

    def _run_wanted_checks(self) -> None:
        while True:
            with self._checker_lock:  # decided under the lock that _wake_checker takes: no wish is lost
                if not self._check_wanted or self._stopping.is_set():
                    self._one_check = None
                    return
                self._check_wanted = False
            try:
                self.refresh_now()
            except Exception:  # a bug: logged here, since no request would see it
                log.exception("background check of %s failed unexpectedly", self.driver.url)

    @property
    def checks_completed(self) -> int:
        """How many checks this process has finished, including those that found no
        need to look (for tools and tests that wait for one)."""
        return self._checks_completed

    def wait_for_checks(self, more_than: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``checks_completed`` exceeds ``more_than``."""
        with self._checks_done:
            return self._checks_done.wait_for(lambda: self._checks_completed > more_than, timeout)

    def wait_until_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this instance's first sync (this worker's
        checker, or a sibling's if that one holds the lock); True once it is done."""
        deadline = time.monotonic() + timeout
        while self._last_listing() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._checks_done:  # woken by this worker's checks; a sibling's, by polling
                self._checks_done.wait(min(0.2, remaining))
        return True

    def sync(self, progress: Optional[SyncProgress] = None) -> SyncReport:
        """List the bucket and sync now, whatever the interval; storage errors propagate."""
        with self._lock:
            began = Moment.now()
            return self._sync_locked(self.driver.marker_version(), began, progress)

    def is_fresh(self) -> bool:
        """Whether a worker of this instance found the folder current within SYNC_INTERVAL."""
        age = self._view_age()
        return age is not None and age < self.sync_interval

    def _view_age(self) -> Optional[float]:
        """Seconds since a worker of this instance last found the folder current: the
        shared record, or this process's own moment if that is newer (or the record could
        not be written: a full disk)."""
        shared = self.state.pulled_age()
        own = None if self._checked is None else self._checked.age()
        known = [age for age in (shared, own) if age is not None]
        return min(known) if known else None

    def _mark_checked(self, began: Moment) -> None:
        self._checked = began
        self._check_ended = time.monotonic()
        self.state.mark_pulled(began)

    def _refresh_locked(self) -> Optional[SyncReport]:
        """One metadata read of the change marker; a full listing only if it moved, the
        last listing was incomplete, or the periodic full listing is due (that one catches
        changes made straight in the bucket by other tools)."""
        began = Moment.now()
        meter = BucketMeter(self.driver)
        marker = self.driver.marker_version()  # read before listing: a later change moves it again
        last = self._last_listing()
        listing_age = None if last is None else last.age()
        if (
            marker is not None  # no marker (yet), or no bucket: only a listing can tell
            and last is not None
            and last.complete
            and last.marker == marker
            and listing_age is not None  # unknown (another boot, an older record): list
            and listing_age < self.full_sync_interval
            and self._folder_matches_state()
        ):
            self._after_check(False)
            self._mark_checked(began)
            log_marker_check(log, self.driver.url, meter)
            return None
        return self._sync_locked(marker, began)

    def _folder_matches_state(self) -> bool:
        """Whether every recorded file is still in the folder and the state is usable: a
        file deleted by hand or by a /tmp cleaner must not stay listed until the next
        full listing. Names only (no stat per file): O(files) in memory per interval."""
        present = set(os.listdir(self.folder.path))
        return self._known_state.all_in(present) and not self.state.needs_snapshot

    def _sync_locked(
        self, marker: Optional[str], began: Moment, progress: Optional[SyncProgress] = None
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
        self._record_unservable(report, began)
        # An incomplete sync (a failure, files of a live upload deferred) is not a
        # baseline: the next check lists again. Kept here if the record can't be written
        # (a full disk), or every check would list.
        complete = not report.failed and not report.deferred
        recorded = self.state.record_listing(marker, began, complete=complete)
        self._own_listing = None if recorded else Listing(marker, time.time(), complete, began)
        self._after_check(True)
        self._mark_checked(began)
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        log_sync(log, self.driver.url, report)
        if not synced and len(report.applied) > 1:
            log.info("cold start: %d files from %s in %.2fs, %d transfers at a time",
                     len(report.applied), self.driver.url, report.seconds, self.concurrency)
        return report

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
        self._unrecorded_unservable = None if recorded else (began, unservable)

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
        worker asked to exit during a long cold start does so promptly; end the checker."""
        self._stopping.set()
        self._wake.set()

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
        known = {} if overwrite else self._known_state.lookup(upload.name for upload in staged)
        self._breaker.check(staged[0].name)
        # Several files: an intent names them first, so a request killed between its
        # writes leaves nothing that a sync serves as a release (pending.py).
        intent: Optional[Intent] = None
        writing: Optional[str] = None  # the file whose write is under way
        try:
            if len(staged) > 1 and not overwrite:
                intent = self._pending.begin(staged)
            for upload in staged:
                if intent is not None:
                    self._pending.check_time(intent, upload.name)
                here = known.get(upload.name)
                if here is not None and here.sha256 != upload.sha256:
                    # This folder's view may be stale (removed through another instance):
                    # only the bucket may say "exists", so ask it (one metadata read).
                    self._refuse_if_stored_otherwise(upload)
                meter = BucketMeter(self.driver)
                writing = upload.name
                remote = self.driver.upload(
                    upload.name, upload.path, create_only=not overwrite, metadata={SHA256_KEY: upload.sha256},
                    token=None if intent is None else intent.token(upload.name),
                )
                writing = None
                stored.append(remote)
                log_bucket_write(log, "store", upload.name, self.driver.url, meter,
                                 version=remote.version, size=upload.size)
            for remote in stored:
                if not remote.created:  # about to be covered by our 200: no clean-up may take it
                    self._pending.adopt(remote, intent)
            if intent is not None and not self._pending.finish(intent):
                # Not ours any more. Claimed (it still exists): a clean-up took this slow
                # request for a dead one and its files are going: no 200. Gone: adopted by
                # a retry, or a clean-up done (it deletes the files before the intent): a
                # 200 only if every file is still ours.
                if self.driver.stat(intent.name) is not None:
                    raise StorageError("upload", intent.name, _TAKEN_FOR_ABANDONED)
                self._check_still_stored(stored)
        except StorageError as exc:
            self._note_write_outcome(exc)
            # A write the bucket did not answer may still land: that file's outcome is unknown.
            unknown = [writing] if writing is not None and isinstance(exc, StorageUnavailable) else []
            exc.changed_before_failure = self._undo_failed_publish(stored, intent, overwrite, unknown)
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

    def _undo_failed_publish(
        self, stored: list[StoredObject], intent: Optional[Intent], overwrite: bool, unknown: list[str]
    ) -> list[str]:
        """Undo what a failed publish created; return the names that stayed changed.
        Under an intent, only once this request has claimed it back: else a retry has
        adopted the files (they must stay) or a clean-up has them (it deletes them)."""
        if overwrite:
            return [r.name for r in stored if r.created]  # a replaced file can't be put back
        if intent is None:
            return self._undo(stored)
        try:
            claimed = self._pending.claim(intent, "undone", keep=[r.name for r in stored if r.created] + unknown)
        except StorageError as claim_failure:
            log.error("could not claim the intent of a failed upload (%s): its files %s stay until it expires",
                      claim_failure, [r.name for r in stored if r.created])
            return [r.name for r in stored if r.created]
        if claimed is None:
            # Claimed by a clean-up (it still exists), or gone with a file of ours gone too
            # (a clean-up done): no 200 can cover our files (a retry adopts only an
            # unclaimed intent, and whole sets), and what we wrote after the clean-up
            # looked would stay alone: undo it. Gone with every file there: adopted.
            if self.driver.stat(intent.name) is not None or any(self.driver.stat(r.name) is None for r in stored):
                return self._undo(stored)
            log.warning("not undoing %s: the upload was taken over (a retry, or a clean-up)",
                        [r.name for r in stored])
            return [r.name for r in stored if r.created]
        stayed = self._undo(stored)
        if unknown or stayed:
            # The claimed intent stays, naming that file: once it expires, a sync removes
            # it if it landed (it carries the intent's token), so no half release stays.
            return stayed
        try:
            self._pending.drop(intent, claimed)
        except StorageError as drop_failure:
            log.warning("could not delete the intent of a failed upload (%s); a sync removes it once it expires",
                        drop_failure)
        return stayed

    def _check_still_stored(self, stored: list[StoredObject]) -> None:
        """Raise StorageError unless every file is still in the bucket at the version
        this request stored or found (its intent was taken over while it ran)."""
        for remote in stored:
            there = self.driver.stat(remote.name)
            if there is None or there.version != remote.version:
                raise StorageError("upload", remote.name, _TAKEN_FOR_ABANDONED)

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
