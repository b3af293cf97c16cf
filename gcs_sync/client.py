"""StorageClient: keeps one local package folder converged on the bucket.

A sync gathers three listings (bucket, folder, last-synced state), plans with the pure
``plan_sync``, applies each event's strategy, and records each file's new state as soon
as it is done. Everything that changes the folder or the state happens under an
inter-process file lock, so gunicorn workers sharing one folder never race; bucket
transfers for a request's own upload or removal happen outside it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional, Sequence

import filelock

from .drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject
from .errors import StorageError
from .events import ContentChangeEvent
from .folder import PackageFolder, StagedFile
from .names import is_package_filename
from .plan import plan_sync
from .state import StateFile, SyncedFile

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SyncReport:
    applied: list[ContentChangeEvent] = dataclasses.field(default_factory=list)
    failed: list[tuple[ContentChangeEvent, StorageError]] = dataclasses.field(default_factory=list)
    skipped_names: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    bucket_calls: int = 0

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for event in self.applied:
            counts[type(event).__name__] = counts.get(type(event).__name__, 0) + 1
        changes = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items())) or "no changes"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return f"{changes}{failed} in {self.seconds:.3f}s, {self.bucket_calls} bucket calls"


class StorageClient:
    def __init__(
        self,
        driver: FileStoreDriver,
        folder: PackageFolder,
        *,
        sync_interval: float,
        lock_timeout: float,
        push_local_changes: bool = False,
    ) -> None:
        self.driver = driver
        self.folder = folder
        self.sync_interval = sync_interval
        self.push_local_changes = push_local_changes
        self.state = StateFile(folder.control, driver.url)
        self._lock = filelock.FileLock(str(folder.control / "lock"), timeout=lock_timeout)
        self._failed_at: Optional[float] = None
        self._reported_odd_names: set[str] = set()
        self._reported_local_only: set[str] = set()

    # -- pulling ---------------------------------------------------------------------

    def ensure_fresh(self) -> None:
        """Sync if this folder's view is older than the interval. Never raises for a
        storage or folder failure: reads go on from the local copy, and it is logged."""
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.sync_interval:
            return  # the bucket just failed: don't make every request wait on it again
        if self._is_fresh():
            return
        try:
            with self._lock:
                if self._is_fresh():  # a sibling worker synced while we waited
                    return
                self._sync_locked()
            self._failed_at = None
        except filelock.Timeout:
            log.warning("sync skipped: another worker has held %s for %.0fs; serving the local copy",
                        self._lock.lock_file, self._lock.timeout)
        except (StorageError, OSError) as exc:
            self._failed_at = time.monotonic()
            log.error("sync from %s failed, serving the local copy: %s", self.driver.url, exc)

    def sync(self) -> SyncReport:
        """Sync now, whatever the interval; storage errors propagate."""
        with self._lock:
            return self._sync_locked()

    def _is_fresh(self) -> bool:
        age = self.state.pulled_age()
        return age is not None and age < self.sync_interval

    def _sync_locked(self) -> SyncReport:
        started = time.monotonic()
        calls_before = sum(self.driver.calls.values())
        report = SyncReport()
        self.folder.sweep_stale_temps()
        listed_at = time.time()
        remote = self._servable(self.driver.list_objects(), report)
        local = self.folder.scan()
        synced = self.state.load()
        plan = plan_sync(local, remote, synced, push_local_changes=self.push_local_changes)
        if plan.state_reset:
            log.warning("%s is empty but its state lists %d files: starting from an empty state",
                        self.folder.path, len(synced))
            self.state.save({})  # before any event, so no later sync reads the old state
        self._report_local_only(plan.local_only)
        state = dict(plan.base_state)
        for event in plan.events:
            try:
                entry = event.apply(self)
            except StorageError as exc:
                report.failed.append((event, exc))
                log.error("sync: %s of %r failed: %s", type(event).__name__, event.name, exc)
                continue
            except OSError as exc:
                error = StorageError(type(event).__name__, event.name, f"local folder: {exc}")
                report.failed.append((event, error))
                log.error("sync: %s", error)
                continue
            report.applied.append(event)
            # Recorded at once, so a worker killed mid-sync keeps what it finished.
            self.state.record(event.name, entry)
            if entry is None:
                state.pop(event.name, None)
            else:
                state[event.name] = entry
        if state != plan.base_state or self.state.has_journal() or not self.state.path.exists():
            self.state.save(state)  # compact: one snapshot, empty journal
        self.state.mark_pulled(listed_at)
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        level = logging.INFO if report.applied or report.failed else logging.DEBUG
        log.log(level, "sync with %s: %s", self.driver.url, report.summary())
        return report

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

    def publish(self, staged: Sequence[StagedFile], *, overwrite: bool) -> list[RemoteObject]:
        """Store a request's uploads in the bucket (create-only unless ``overwrite``), then
        make them all visible locally at once. All or none, as far as the bucket allows:
        if one fails, the create-only uploads already made are deleted again; what could
        not be undone is in the error's ``changed_before_failure``. Raises ObjectExists or
        another StorageError; the caller removes the staged files in every case. Once the
        bucket has the files the upload counts as done: a local problem after that only
        delays this folder until its next sync."""
        stored: list[RemoteObject] = []
        try:
            for upload in staged:
                remote = self.driver.upload(
                    upload.name, upload.path, create_only=not overwrite, metadata={SHA256_KEY: upload.sha256}
                )
                stored.append(remote)
                log.info("stored %r in %s (version %s, %d bytes)",
                         upload.name, self.driver.url, remote.version, upload.size)
        except StorageError as exc:
            exc.changed_before_failure = [r.name for r in stored] if overwrite else self._undo(stored)
            raise
        try:
            with self._lock:
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

    def _undo(self, stored: list[RemoteObject]) -> list[str]:
        """Delete this request's own create-only uploads; return those that stayed."""
        stayed = []
        for remote in stored:
            try:
                self.driver.delete(remote.name, if_version=remote.version)
                log.info("undid the upload of %r: its request failed", remote.name)
            except StorageError as exc:
                stayed.append(remote.name)
                log.error("could not undo the upload of %r after its request failed: %s", remote.name, exc)
        return stayed

    def retract(self, names: Sequence[str]) -> None:
        """Delete files from the bucket, then from the folder. Raises StorageError, whose
        ``changed_before_failure`` lists the files already deleted (deletes can't be undone)."""
        removed: list[str] = []
        try:
            for name in names:
                self.driver.delete(name)
                removed.append(name)
                log.info("deleted %r from %s", name, self.driver.url)
        except StorageError as exc:
            exc.changed_before_failure = list(removed)
            raise
        finally:
            self._remove_locally(removed)

    def _remove_locally(self, names: list[str]) -> None:
        if not names:
            return
        try:
            with self._lock:
                for name in names:
                    self.folder.remove(name)
                    self.state.record(name, None)
        except filelock.Timeout:
            log.warning("%s gone from the bucket but the folder lock was busy; they go on the next sync", names)
        except OSError as exc:
            log.error("%s gone from the bucket but could not be removed from %s (%s); the next sync retries",
                      names, self.folder.path, exc)
