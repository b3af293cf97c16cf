"""Metadata records in the bucket, and each synced file's record brought here.

``RecordStore`` reads and writes the two objects a package file has beside it (its record
and its core metadata file: ``records.record`` says where). ``RecordKeeper`` gives a file
the sync brings here (or finds without a record) its record: the bucket's if there is one
that describes these bytes, else one computed from the file, stored create-only so the
first instance to compute it is the only one to store it. An instance that may not write
to the bucket keeps what it computed and says so in its log, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Container, Optional

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject, Version
from gcs_sync.errors import ObjectChanged, ObjectExists, StorageError, StoragePermissionDenied
from gcs_sync.files import sha256_of
from gcs_sync.records.compute import compute_record_or_note_problem
from gcs_sync.records.record import (
    RECORDS_FOLDER,
    FileRecord,
    RecordError,
    filename_of_record,
    metadata_object,
    record_object,
    upload_time,
)
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import CATALOGUED, SyncedFile

log = logging.getLogger("gcs_sync.records")


@dataclasses.dataclass(frozen=True)
class StoredRecord:
    """What a write of a record left in the bucket: the versions this call wrote (None:
    not written by it), so an undo removes only those."""

    record: FileRecord
    version: Version
    record_written: Optional[Version] = None
    metadata_written: Optional[Version] = None
    # What this call's writes replaced (None: they created their objects), which an undo
    # puts back: another upload's record overwritten by one whose file was then refused.
    replaced_record: Optional[bytes] = None
    replaced_metadata: Optional[bytes] = None


class RecordStore:
    def __init__(self, driver: FileStoreDriver) -> None:
        self.driver = driver

    def list_versions(self, known: Container[str] = ()) -> dict[str, Version]:
        """Every record in the bucket: package filename -> the record object's version.
        Filenames in ``known`` (the listing's packages) are not checked again."""
        found: dict[str, Version] = {}
        start = len(RECORDS_FOLDER)
        for name, version in self.driver.list_note_versions(RECORDS_FOLDER).items():
            filename = name[start:] if name.startswith(RECORDS_FOLDER) and name[start:] in known \
                else filename_of_record(name)
            if filename is not None:
                found[filename] = version
        return found

    def read(self, filename: str) -> Optional[tuple[Optional[FileRecord], Version]]:
        """The record of ``filename`` and the version those bytes are (not a listing's: on
        S3 a version is the bytes' MD5, so a yank undone gives the old version back); the
        record is None if the object is not a readable record (logged: it is computed
        again). None if there is none."""
        found = self.driver.read_note_versioned(record_object(filename))
        if found is None:
            return None
        data, version = found
        try:
            record = FileRecord.from_bytes(data, record_object(filename))
        except RecordError as exc:
            log.warning("ignoring an unreadable record in the bucket: %s", exc)
            return None, version
        if record.filename != filename:
            log.warning("ignoring the record %s: it describes %r", record_object(filename), record.filename)
            return None, version
        return record, version

    def read_metadata(self, record: FileRecord) -> Optional[bytes]:
        """The core metadata file ``record`` names, if the bucket has it with that digest."""
        if record.metadata_sha256 is None:
            return None
        data = self.driver.read_note(metadata_object(record.filename))
        if data is None or hashlib.sha256(data).hexdigest() != record.metadata_sha256:
            return None
        return data

    def write(
        self, record: FileRecord, metadata: Optional[bytes], *,
        create_only: bool = False, if_version: Optional[Version] = None, replacing: Optional[bytes] = None,
    ) -> StoredRecord:
        """Store the core metadata file, then the record (so a reader that finds the
        record finds the file it names). The record's write is conditional as asked
        (ObjectExists, ObjectChanged); ``replacing``: the bytes of the record at
        ``if_version``, which an undo puts back. The metadata file is the same bytes for
        the same package file, so it is written unless those very bytes are already there."""
        metadata_written, replaced_metadata = (None, None) if metadata is None else \
            self._write_metadata(record.filename, metadata)
        # A failed record write leaves the metadata file: for this name and these bytes it
        # is the same whoever wrote it, and a record another writer stored meanwhile may
        # name it. (A failed upload's undo removes it, at the version written.)
        version = self.driver.put_note(record_object(record.filename), record.to_bytes(),
                                       if_version=if_version, create_only=create_only)
        return StoredRecord(record, version, version, metadata_written,
                            replacing if if_version is not None else None, replaced_metadata)

    def write_metadata(self, filename: str, data: bytes) -> Optional[Version]:
        """Store ``filename``'s core metadata file alone (its record names this digest)."""
        return self._write_metadata(filename, data)[0]

    def _write_metadata(self, filename: str, data: bytes) -> tuple[Optional[Version], Optional[bytes]]:
        """The version written (None: those very bytes were there) and the bytes it replaced."""
        name = metadata_object(filename)
        try:
            return self.driver.put_note(name, data, create_only=True), None
        except ObjectExists:
            found = self.driver.read_note_versioned(name)
            if found is not None and found[0] == data:
                return None, None  # the same bytes, already there: not ours to undo
            # Another file's of this name (left behind, or the one an upload is refused
            # against): replaced at the version read, and put back by an undo.
            written = self.driver.put_note(name, data, if_version=None if found is None else found[1],
                                           create_only=found is None)
            return written, None if found is None else found[0]

    def set_yank(self, filename: str, yanked: bool, reason: Optional[str]) -> Optional[FileRecord]:
        """Mark a record yanked (with ``reason``) or not; only the record changes. Read,
        change, write at the version read, again if another writer came between. None if
        there is no record of ``filename``."""
        for _ in range(10):
            found = self.read(filename)
            if found is None:
                return None
            record, version = found
            if record is None:
                raise StorageError("yank", record_object(filename), "the record is unreadable; run backfill first")
            changed = record.with_yank(yanked, reason)
            if changed == record:
                return record
            try:
                self.driver.put_note(record_object(filename), changed.to_bytes(), if_version=version)
                return changed
            except ObjectChanged:
                continue
        raise StorageError("yank", record_object(filename), "the record kept changing while it was written")

    def forget(self, filename: str, sha256: Optional[str]) -> None:
        """Remove the record and core metadata file of a removed package file whose bytes
        had ``sha256`` (None: not known here): each only at the version read, and only if
        it describes those bytes. A record of other bytes is a newer upload's, written
        before its file (it is kept)."""
        found = self.read(filename)
        if found is None:
            return
        record, version = found
        if record is not None and sha256 is not None and record.sha256 != sha256:
            return
        try:
            self.driver.delete(record_object(filename), if_version=version)
        except ObjectChanged:
            return  # rewritten meanwhile (a new upload's): kept
        if record is not None and record.metadata_sha256 is not None:
            metadata = self.driver.read_note_versioned(metadata_object(filename))
            if metadata is not None and hashlib.sha256(metadata[0]).hexdigest() == record.metadata_sha256:
                self._delete_quietly(metadata_object(filename), metadata[1])

    def undo(self, stored: StoredRecord) -> None:
        """Undo what ``write`` wrote, each only at the version it wrote: what it replaced
        is put back, what it created is removed."""
        if stored.record_written is not None:
            self._put_back(record_object(stored.record.filename), stored.record_written, stored.replaced_record)
        if stored.metadata_written is not None:
            self._put_back(metadata_object(stored.record.filename), stored.metadata_written, stored.replaced_metadata)

    def _put_back(self, name: str, written: Version, replaced: Optional[bytes]) -> None:
        if replaced is None:
            self._delete_quietly(name, written)
            return
        try:
            self.driver.put_note(name, replaced, if_version=written)
        except ObjectChanged:
            pass  # replaced since by another writer: theirs stays
        except StorageError as exc:
            log.error("could not put back %s (%s); the next sync or `backfill` computes it again", name, exc)

    def _delete_quietly(self, name: str, version: Version) -> None:
        try:
            self.driver.delete(name, if_version=version)
        except ObjectChanged:
            pass  # replaced since by another writer: theirs stays
        except StorageError as exc:
            log.error("could not remove %s again (%s); a later upload of that file replaces it", name, exc)


class RecordKeeper:
    """Gives the files the sync brings here their records (see the module docstring)."""

    def __init__(self, store: RecordStore, folder: PackageFolder) -> None:
        self.store = store
        self.folder = folder
        self._warned_read_only = False
        self._warn_lock = threading.Lock()

    def attach(self, name: str, entry: SyncedFile, listed: Optional[Version], modified: Optional[float],
               *, owner: bool = False) -> SyncedFile:
        """``entry`` with its record: the bucket's (``listed``: its record's version in the
        last listing, None if it had none) if it describes these bytes, else computed from
        the local file. ``owner``: this instance has just written the file's bytes to the
        bucket, so a record of other bytes is stale and is replaced. Otherwise such a
        record is left alone (it may be a newer file's: this listing is older) and the
        one computed here is kept here, until that record changes. Raises StorageError
        if the bucket fails."""
        entry = dataclasses.replace(entry, sha256=entry.sha256 or sha256_of(self.folder.file_path(name)))
        found = self.store.read(name) if listed is not None else None
        if found is None:
            return self._compute(name, entry, modified, None, owner)
        theirs, version = found
        if theirs is not None and theirs.sha256 == entry.sha256:
            if self._bring_metadata(theirs):
                return entry.with_record(theirs, version)
            return self._repair_metadata(name, entry, theirs, version)
        if owner or theirs is None:
            # Ours to replace: this instance wrote the file, or the object is not a readable
            # record (no upload writes one of those).
            return self._compute(name, entry, modified, version, owner)
        record, metadata = self._computed(name, entry, modified)
        self._keep_metadata(name, metadata)
        log.warning("the record of %s in the bucket describes other bytes; serving the one computed here "
                    "until it changes (an upload or `backfill` replaces it)", name)
        return entry.with_record(record, version)

    def catalogue(self, remote: RemoteObject, listed: Optional[Version]) -> SyncedFile:
        """The catalog entry of a file not held here (PACKAGE_FILES cache or redirect): the
        bucket's record (``listed``: its version in the listing, None if it had none) if it
        describes the listed bytes; else one computed from the file, downloaded to a
        temporary file for that alone (a file put there by another tool), and stored
        create-only. Raises StorageError if the bucket fails."""
        name = remote.name
        found = self.store.read(name) if listed is not None else None
        if found is not None:
            theirs, version = found
            if theirs is not None and theirs.filename == name and theirs.size == remote.size \
                    and (remote.sha256 is None or remote.sha256 == theirs.sha256):
                return SyncedFile(remote.version, CATALOGUED, theirs.sha256, theirs, version)
        with self.folder.scratch(name) as path:
            sha256 = self.store.driver.download(name, path, remote.version, listed_sha256=remote.sha256)
            entry = SyncedFile(remote.version, CATALOGUED, sha256)
            # Another's record (of other bytes) stays: this listing may be older than it.
            stale = None if found is None else found[1]
            theirs = None if found is None else found[0]
            if theirs is not None and theirs.sha256 != sha256:
                record, _ = self._computed(name, entry, remote.modified, path)
                log.warning("the record of %s in the bucket describes other bytes; serving the one computed here "
                            "until it changes (an upload or `backfill` replaces it)", name)
                return entry.with_record(record, stale)
            return self._compute(name, entry, remote.modified, stale, owner=False, path=path, keep_locally=False)

    def _computed(self, name: str, entry: SyncedFile, modified: Optional[float],
                  path: Optional[Path] = None) -> tuple[FileRecord, Optional[bytes]]:
        assert entry.sha256 is not None
        path = path or self.folder.file_path(name)
        record, metadata, _ = compute_record_or_note_problem(
            path, name, sha256=entry.sha256, size=path.stat().st_size,
            upload_time=upload_time(modified if modified is not None else time.time()),
        )
        return record, metadata

    def _compute(self, name: str, entry: SyncedFile, modified: Optional[float], stale: Optional[Version],
                 owner: bool, path: Optional[Path] = None, keep_locally: bool = True) -> SyncedFile:
        record, metadata = self._computed(name, entry, modified, path)
        try:
            stored = self.store.write(record, metadata, create_only=stale is None, if_version=stale)
        except (ObjectExists, ObjectChanged):
            # Another instance stored one meanwhile: theirs, if it describes these bytes.
            found = self.store.read(name)
            theirs = None if found is None else found[0]
            if found is not None and theirs is not None and theirs.sha256 == entry.sha256 \
                    and (not keep_locally or self._bring_metadata(theirs)):
                return entry.with_record(theirs, found[1])
            if not owner or found is None:
                raise
            stored = self.store.write(record, metadata, if_version=found[1])
        except StoragePermissionDenied as exc:
            if not keep_locally:
                self._say_read_only(exc)
                return entry.with_record(record, None)
            return self._kept_here(exc, name, entry.with_record(record, None), metadata)
        if keep_locally:
            self._keep_metadata(name, metadata)
        log.info("computed the record of %s (no record in the bucket described it)", name)
        return entry.with_record(record, stored.version)

    def _repair_metadata(self, name: str, entry: SyncedFile, theirs: FileRecord, version: Version) -> SyncedFile:
        """The bucket's record describes these bytes but its core metadata file is missing
        or another: store the file again from these bytes. The record keeps its upload
        time, uploader and yank state; it is rewritten only if it names another digest."""
        computed, metadata = self._computed(name, entry, None)
        repaired = dataclasses.replace(computed, upload_time=theirs.upload_time, uploader=theirs.uploader,
                                       yanked=theirs.yanked, yank_reason=theirs.yank_reason)
        try:
            if computed.metadata_sha256 == theirs.metadata_sha256 and metadata is not None:
                self.store.write_metadata(name, metadata)
                self._keep_metadata(name, metadata)
                return entry.with_record(theirs, version)
            stored = self.store.write(repaired, metadata, if_version=version, replacing=theirs.to_bytes())
        except StoragePermissionDenied as exc:
            return self._kept_here(exc, name, entry.with_record(repaired, version), metadata)
        self._keep_metadata(name, metadata)
        log.warning("the core metadata file of %s was missing or another: stored again", name)
        return entry.with_record(repaired, stored.version)

    def _bring_metadata(self, record: FileRecord) -> bool:
        """Make the local core metadata file the one ``record`` names; False if the bucket
        does not have it (then it is stored again: ``_repair_metadata``)."""
        path = self.folder.metadata_path(record.filename)
        if record.metadata_sha256 is None:
            self.folder.remove_metadata(record.filename)
            return True
        if _sha256_if_exists(path) == record.metadata_sha256:
            return True
        data = self.store.read_metadata(record)
        if data is None:
            return False
        self.folder.write_metadata(record.filename, data)
        return True

    def _keep_metadata(self, name: str, metadata: Optional[bytes]) -> None:
        if metadata is None:
            self.folder.remove_metadata(name)
        else:
            self.folder.write_metadata(name, metadata)

    def _kept_here(self, exc: StorageError, name: str, entry: SyncedFile, metadata: Optional[bytes]) -> SyncedFile:
        """``entry``, whose record this instance may not store: kept here (said once)."""
        self._say_read_only(exc)
        self._keep_metadata(name, metadata)
        return entry

    def _say_read_only(self, exc: StorageError) -> None:
        with self._warn_lock:
            if self._warned_read_only:
                return
            self._warned_read_only = True
        log.warning("this instance may not write metadata records to the bucket (%s): the records it computes "
                    "are kept here only, and computed again by each instance. Run `python -m gcs_sync backfill` "
                    "with write access to store them once.", exc)


def _sha256_if_exists(path: Path) -> Optional[str]:
    try:
        return sha256_of(path)
    except FileNotFoundError:
        return None
