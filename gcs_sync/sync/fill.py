"""A mirror's fill: the files its state catalogues (known from a catalog snapshot, not
held here) brought into the folder in the background, after a cold start that did not
wait for them (``SyncEngine``, ``fill_in_background``).

    one worker at a time (the fill lock; a sibling looks again a minute later)
    for each batch of FILL_BATCH catalogued files:
        outside the lock   download each (SYNC_CONCURRENCY at a time) to a hidden temp
                           file in the folder, and read its core metadata file
        under the lock     each file whose entry is still the one it was fetched for is
                           renamed into place with its metadata file, and all are
                           recorded in one journal write; the others (removed or
                           replaced meanwhile) are dropped

The folder lock is held for the renames and one write, never for a download, so an
upload or a check does not wait for the fill. A worker killed between a rename and the
record leaves a file whose entry is still catalogued: the fill's next pass replaces it,
or the plan removes it if the bucket no longer has it (``plan_sync``). A file that fails
is tried again once its entry changes (a listing or the feed catalogues it again), or
FILL_RETRY_SECONDS after the fill that failed on it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import filelock

from gcs_sync.drivers.base import FileStoreDriver, Version
from gcs_sync.errors import ObjectNotFound, StorageError
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.records import RecordStore
from gcs_sync.sync.state import CATALOGUED, StateFile, SyncedFile
from gcs_sync.sync.tracked import TrackedState

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

# Files fetched, then installed under one hold of the folder lock.
FILL_BATCH = 64
# Seconds after a fill before it tries again the files it failed on (unless they change).
FILL_RETRY_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class _Fetched:
    name: str
    catalogued: SyncedFile  # the entry it was fetched for: installed only if still current
    temp: Path
    entry: SyncedFile  # what the state records once it is in place (its fingerprint aside)
    metadata: Optional[bytes]  # its core metadata file, if its record names one


class FolderFill:
    """One worker's fill of the folder it shares with its siblings: the first to start
    takes the fill lock, the others look again FILL_RETRY_SECONDS later (the lock is
    freed with a worker that dies), so no file is downloaded twice."""

    def __init__(self, driver: FileStoreDriver, folder: PackageFolder, records: RecordStore, state: StateFile,
                 known_state: TrackedState, lock: filelock.BaseFileLock, stopping: threading.Event,
                 concurrency: int) -> None:
        self._driver = driver
        self._folder = folder
        self._records = records
        self._state = state
        self._known_state = known_state
        self._lock = lock
        # Non-blocking: a sibling filling the folder already is not waited for.
        self._fill_lock = filelock.FileLock(str(folder.control / "fill.lock"), timeout=0)
        self._stopping = stopping
        self._concurrency = max(concurrency, 1)
        self._thread: Optional[threading.Thread] = None
        self._thread_lock = threading.Lock()
        self._wanted = True  # looked for at this process's first check
        # The files the last fill could not bring, as catalogued then; when it ended
        # (time.monotonic(); never yet: due at once).
        self._failed: dict[str, SyncedFile] = {}
        self._ended = -FILL_RETRY_SECONDS

    def want(self) -> None:
        """Files were catalogued (a check found them changed): look again."""
        self._wanted = True

    def start_if_due(self) -> None:
        """Start the fill, unless one is under way here or nothing is left to bring (the
        state's count: O(changes) per check). Otherwise: at once at the first check and
        after one that catalogued files, once a file the last fill failed on is catalogued
        again, and FILL_RETRY_SECONDS after this worker's last fill (it failed on some,
        a sibling was at it, or a sibling's fill stopped with its worker)."""
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if not self._wanted:
                if not self._known_state.catalogued_count():
                    self._failed = {}
                    return
                if time.monotonic() - self._ended >= FILL_RETRY_SECONDS:
                    self._failed = {}  # all of them again
                else:
                    current = self._known_state.lookup(self._failed)
                    if all(current.get(name) == entry for name, entry in self._failed.items()):
                        return
            self._wanted = False
            self._thread = threading.Thread(target=self._run, name="gcs-sync-fill", daemon=True)
            self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the fill (tools and tests); True once none
        is under way."""
        with self._thread_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- the fill ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._fill_lock:
                self._fill()
        except filelock.Timeout:
            log.debug("filling %s: a sibling worker is at it; looked at again within a minute", self._folder.path)
        except OSError as exc:  # the folder's state, lock or files could not be used
            log.error("filling %s stopped (%s); tried again within a minute", self._folder.path, exc)
        except Exception:  # a bug: logged whole; the files go on being served through the cache
            log.exception("filling %s stopped unexpectedly; tried again within a minute", self._folder.path)
        finally:
            self._ended = time.monotonic()

    def _fill(self) -> None:
        started = time.monotonic()
        failed = self._unchanged(self._failed)
        brought = 0
        paused = False
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="gcs-sync-fill") as pool:
            while not paused and not self._stopping.is_set():
                names = [name for name in self._known_state.catalogued_names() if name not in failed]
                if not names:
                    break
                log.debug("filling %s: %d catalogued files not here yet", self._folder.path, len(names))
                done, paused = self._round(pool, names, failed)
                brought += done
                failed = self._unchanged(failed)  # one catalogued again meanwhile: tried again now
        self._failed = failed
        if brought or failed:  # (a sibling that found nothing left says nothing)
            log.info("filling %s: %d files brought in %.1fs; %d failed, tried again within a minute",
                     self._folder.path, brought, time.monotonic() - started, len(failed))

    def _unchanged(self, failed: dict[str, SyncedFile]) -> dict[str, SyncedFile]:
        return {name: entry for name, entry in self._known_state.lookup(failed).items() if entry == failed[name]}

    def _round(self, pool: ThreadPoolExecutor, names: list[str], failed: dict[str, SyncedFile]) -> tuple[int, bool]:
        """One pass over ``names``; the number brought, and whether to pause (a whole batch
        failed: a full disk, an outage; the rest waits for the retry rather than logging
        one error per file)."""
        brought = 0
        for first in range(0, len(names), FILL_BATCH):
            if self._stopping.is_set():
                break
            done, failures = self._batch(pool, names[first:first + FILL_BATCH], failed)
            brought += done
            if failures and not done and not self._stopping.is_set():
                log.warning("filling %s paused: a whole batch failed; tried again within a minute",
                            self._folder.path)
                return brought, True
        return brought, False

    def _batch(self, pool: ThreadPoolExecutor, names: list[str], failed: dict[str, SyncedFile]) -> tuple[int, int]:
        """Fetch those of ``names`` still catalogued, then install them under the lock;
        the numbers brought and failed (each failure joins ``failed``)."""
        todo = {name: entry for name, entry in self._known_state.lookup(names).items()
                if entry.local_fingerprint == CATALOGUED}
        fetched: list[_Fetched] = []
        failures = 0
        try:
            for name, outcome in zip(todo, pool.map(self._fetch_one, todo.items())):
                if isinstance(outcome, _Fetched):
                    fetched.append(outcome)
                else:
                    failed[name] = todo[name]
                    failures += 1
                    if not self._stopping.is_set():
                        log.error("filling %s: %s could not be fetched: %s", self._folder.path, name, outcome)
            # The fill is in no hurry: it waits out a long hold of the lock (a full
            # listing) rather than fetching the batch again.
            while fetched and not self._stopping.is_set():
                try:
                    with self._lock:
                        return self._install(fetched), failures
                except filelock.Timeout:
                    log.debug("filling %s: the folder lock is busy; still waiting", self._folder.path)
            return 0, failures
        finally:
            for item in fetched:
                item.temp.unlink(missing_ok=True)  # installed ones are gone already

    def _fetch_one(self, item: tuple[str, SyncedFile]) -> "_Fetched | StorageError":
        name, catalogued = item
        if self._stopping.is_set():
            return StorageError("fill", name, "not started: the worker is stopping")
        temp = self._folder.temp_path(name)
        try:
            version = Version(catalogued.remote_version)
            if not version:  # catalogued from a feed entry: its version comes with a listing
                found = self._driver.stat(name)
                if found is None:
                    raise ObjectNotFound("download", name, "no such object in the bucket")
                version = found.version
            sha256 = self._driver.download(name, temp, version, listed_sha256=catalogued.sha256)
            entry = SyncedFile(version, CATALOGUED, sha256)
            record = catalogued.record
            metadata = None
            # The record it was catalogued with, if it describes this file and these bytes
            # and the bucket has the metadata file it names; else none here, and the next
            # full listing reads or computes it (RecordMissing).
            if record is not None and record.filename == name and record.sha256 == sha256 \
                    and catalogued.record_version is not None:
                metadata = self._records.read_metadata(record)
                if metadata is not None or record.metadata_sha256 is None:
                    entry = entry.with_record(record, catalogued.record_version)
            return _Fetched(name, catalogued, temp, entry, metadata)
        except StorageError as exc:
            temp.unlink(missing_ok=True)
            return exc
        except OSError as exc:
            temp.unlink(missing_ok=True)
            return StorageError("fill", name, f"local folder: {exc}")
        except Exception as exc:  # a bug: this file fails, the batch's others are installed
            temp.unlink(missing_ok=True)
            log.exception("filling %s: fetching %s failed unexpectedly", self._folder.path, name)
            return StorageError("fill", name, f"{type(exc).__name__}: {exc}")

    def _install(self, fetched: list[_Fetched]) -> int:
        """Under the lock: rename each file whose entry is unchanged into place, then
        record them all; the number installed."""
        current = self._known_state.lookup(item.name for item in fetched)
        entries: list[tuple[str, Optional[SyncedFile]]] = []
        try:
            for item in fetched:
                if current.get(item.name) != item.catalogued:
                    continue  # removed or replaced since it was fetched
                # Its metadata file first: whoever finds the package here finds it too.
                if item.metadata is not None:
                    self._folder.write_metadata(item.name, item.metadata)
                else:
                    self._folder.remove_metadata(item.name)
                try:
                    local = self._folder.install(item.temp, item.name)
                except FileNotFoundError:
                    # Swept as a crashed writer's leftover: unchanged for STALE_TEMP_SECONDS
                    # while the rest of a slow batch came in. Still catalogued: fetched again.
                    log.warning("filling %s: %s was fetched but its temp file is gone (swept as stale); "
                                "fetched again in the next round", self._folder.path, item.name)
                    self._folder.remove_metadata(item.name)
                    continue
                entries.append((item.name, dataclasses.replace(item.entry, local_fingerprint=local)))
        finally:
            self._state.record_many(entries)  # what is in place, even if a later one failed
        return len(entries)
