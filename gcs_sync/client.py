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
from typing import Optional

import filelock

from .drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject
from .errors import StorageError
from .events import ContentChangeEvent
from .folder import PackageFolder, StagedFile
from .names import is_package_filename
from .plan import next_state, plan_sync
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
        propagate_local_deletes: bool = False,
    ) -> None:
        self.driver = driver
        self.folder = folder
        self.sync_interval = sync_interval
        self.propagate_local_deletes = propagate_local_deletes
        self.state = StateFile(folder.control, driver.url)
        self._lock = filelock.FileLock(str(folder.control / "lock"), timeout=lock_timeout)
        self._failed_at: Optional[float] = None
        self._reported_odd_names: set[str] = set()

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
        state = next_state(local, remote, synced)
        for event in plan_sync(local, remote, synced, propagate_local_deletes=self.propagate_local_deletes):
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
        if state != synced or self.state.has_journal() or not self.state.path.exists():
            self.state.save(state)  # compact: one snapshot, empty journal
        self.state.mark_pulled(listed_at)
        report.seconds = time.monotonic() - started
        report.bucket_calls = sum(self.driver.calls.values()) - calls_before
        level = logging.INFO if report.applied or report.failed else logging.DEBUG
        log.log(level, "sync with %s: %s", self.driver.url, report.summary())
        return report

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

    def publish(self, staged: StagedFile, *, overwrite: bool) -> RemoteObject:
        """Store an upload in the bucket (create-only unless ``overwrite``), then make it
        visible locally. Raises ObjectExists or another StorageError; the caller removes
        the staged file in every case. Once the bucket has the file the upload counts as
        done: a local problem after that only delays this folder until its next sync."""
        remote = self.driver.upload(
            staged.name, staged.path, create_only=not overwrite, metadata={SHA256_KEY: staged.sha256}
        )
        log.info("stored %r in %s (version %s, %d bytes)", staged.name, self.driver.url, remote.version, staged.size)
        try:
            with self._lock:
                local = self.folder.install(staged.path, staged.name)
                self.state.record(staged.name, SyncedFile(remote.version, local, staged.sha256))
        except filelock.Timeout:
            log.warning("%r is in the bucket but the folder lock was busy; it appears here on the next sync",
                        staged.name)
        except OSError as exc:
            log.error("%r is in the bucket but could not be placed in %s (%s); the next sync retries",
                      staged.name, self.folder.path, exc)
        return remote

    def retract(self, name: str, if_version: Optional[str] = None) -> None:
        """Delete a file from the bucket, then from the folder. Raises StorageError."""
        self.driver.delete(name, if_version=if_version)
        log.info("deleted %r from %s", name, self.driver.url)
        try:
            with self._lock:
                self.folder.remove(name)
                self.state.record(name, None)
        except filelock.Timeout:
            log.warning("%r is gone from the bucket but the folder lock was busy; it goes on the next sync", name)
        except OSError as exc:
            log.error("%r is gone from the bucket but could not be removed from %s (%s); the next sync retries",
                      name, self.folder.path, exc)
