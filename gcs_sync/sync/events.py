"""ContentChangeEvent: what a sync found, one small frozen dataclass per kind, each with
its strategy. A strategy does the I/O for one file and returns the file's new synced
state, or None when the file is gone from both sides.

    kind            found                                   strategy
    RemoteAdded     in the bucket, not here                 download
    RemoteChanged   here, but the bucket has another       download and replace
                    version (or ours was edited)
    RemoteDeleted   gone from the bucket, was synced        remove locally
    LocalAdded      here, never in the bucket               upload (create-only)
    LocalChanged    edited here, the bucket's copy is       upload over that version only
                    still the one last synced
    LocalDeleted    gone from here, was synced              delete from the bucket, only
                                                            the version last synced
    RecordChanged   the file is synced, its record in the    fetch the record (and its
                    bucket is another version                core metadata file)
    RecordMissing   the file is synced, the bucket has no    compute it from the file,
                    record of it                             store it create-only
    Catalogued      (cache/redirect) in the bucket, new or   read its record (or compute it
                    changed                                  from a one-off download)
    Uncatalogued    (cache/redirect) gone from the bucket    forget it
    RecordRead      (feed) a change whose record the check   nothing: the entry is known
                    already read

Every file brought here or pushed gets its record the same way (``records.RecordKeeper``);
a record that cannot be had now does not fail the file: it is planned again next time.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Protocol, Union

from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject, Version
from gcs_sync.files import sha256_of
from gcs_sync.errors import StorageError
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.records import RecordKeeper
from gcs_sync.sync.state import SyncedFile

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know


class Transfers(Protocol):
    driver: FileStoreDriver
    folder: PackageFolder
    records: RecordKeeper


def _with_record(io: Transfers, name: str, entry: SyncedFile, listed: Optional[Version],
                 modified: Optional[float], *, owner: bool = False) -> SyncedFile:
    """``entry`` with its record; without one if the bucket failed (the file is served
    meanwhile, and the next sync plans its record again)."""
    try:
        return io.records.attach(name, entry, listed, modified, owner=owner)
    except (StorageError, OSError) as exc:
        log.error("sync: the record of %r could not be had now (%s); planned again at the next sync", name, exc)
        return entry


@dataclasses.dataclass(frozen=True)
class _RemoteCopy:
    """A bucket version to bring here: RemoteAdded and RemoteChanged share the strategy
    (an event equals only one of its own kind: dataclasses compare the class too)."""

    name: str
    remote: RemoteObject
    # The version of the file's record in the bucket's listing (None: it had none).
    record_version: Optional[Version] = None

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        # The digest comes with the download (object metadata, or hashed while written):
        # computed once per file version, never per request.
        with io.folder.replacing(self.remote.name) as temp:
            sha256 = io.driver.download(self.remote.name, temp, self.remote.version, listed_sha256=self.remote.sha256)
        entry = SyncedFile(self.remote.version, io.folder.fingerprint(self.remote.name), sha256)
        return _with_record(io, self.name, entry, self.record_version, self.remote.modified)


@dataclasses.dataclass(frozen=True)
class RemoteAdded(_RemoteCopy):
    """In the bucket, not here: download."""


@dataclasses.dataclass(frozen=True)
class RemoteChanged(_RemoteCopy):
    """Here, but the bucket has another version (or ours was edited): download and replace."""


@dataclasses.dataclass(frozen=True)
class RemoteDeleted:
    name: str

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        io.folder.remove(self.name)
        io.folder.remove_metadata(self.name)
        return None


@dataclasses.dataclass(frozen=True)
class LocalAdded:
    name: str
    local_fingerprint: str

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        path = io.folder.file_path(self.name)
        sha256 = sha256_of(path)
        remote = io.driver.upload(self.name, path, create_only=True, metadata={SHA256_KEY: sha256})
        entry = SyncedFile(remote.version, self.local_fingerprint, sha256)
        return _with_record(io, self.name, entry, None, None, owner=True)


@dataclasses.dataclass(frozen=True)
class LocalChanged:
    name: str
    local_fingerprint: str
    remote_version: Version
    synced_sha256: Optional[str]

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        path = io.folder.file_path(self.name)
        sha256 = sha256_of(path)
        if sha256 == self.synced_sha256:  # touched, not edited: nothing to push
            return SyncedFile(self.remote_version, self.local_fingerprint, sha256)
        # Conditional: a file pushed half-written and completed since replaces its own
        # earlier push, never an upload made meanwhile (then the bucket's copy wins).
        remote = io.driver.upload(self.name, path, create_only=False, if_version=self.remote_version,
                                  metadata={SHA256_KEY: sha256})
        entry = SyncedFile(remote.version, self.local_fingerprint, sha256)
        # This sync wrote these bytes: a record of others is stale, and replaced.
        return _with_record(io, self.name, entry, None, None, owner=True)


@dataclasses.dataclass(frozen=True)
class LocalDeleted:
    name: str
    remote_version: Version

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        # Conditional: an upload that replaced the object since the listing is kept.
        io.driver.delete(self.name, if_version=self.remote_version)
        return None


@dataclasses.dataclass(frozen=True)
class _RecordUpdate:
    """A synced file whose record is not the bucket's: RecordChanged and RecordMissing
    share the strategy. Unlike a file's, a record that can't be had fails the event, so
    the sync is incomplete and the next check lists again."""

    name: str
    entry: SyncedFile  # the file's synced state, as planned
    listed: Optional[Version]  # its record's version in the listing; None: no record there
    modified: Optional[float]  # when the file was written to the bucket

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        return io.records.attach(self.name, self.entry, self.listed, self.modified)


@dataclasses.dataclass(frozen=True)
class RecordChanged(_RecordUpdate):
    """Synced, but the bucket's record of it is another version (yanked, say): fetch it."""


@dataclasses.dataclass(frozen=True)
class RecordMissing(_RecordUpdate):
    """Synced, and the bucket has no record of it: compute it from the file, store it."""


@dataclasses.dataclass(frozen=True)
class Catalogued:
    """In the bucket, new or changed, and files are not held here (PACKAGE_FILES cache or
    redirect): its record only, read (or computed from the file, if it has none)."""

    name: str
    remote: RemoteObject
    # The version of the file's record in the bucket's listing (None: it had none).
    record_version: Optional[Version] = None

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        return io.records.catalogue(self.remote, self.record_version)


@dataclasses.dataclass(frozen=True)
class Uncatalogued:
    """Gone from the bucket, and files are not held here: forgotten (a cached copy is
    never served again: the index no longer lists it)."""

    name: str

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        return None


@dataclasses.dataclass(frozen=True)
class RecordRead:
    """A change the feed announced, whose record was read (and matched) while checking it:
    nothing left to fetch."""

    name: str
    entry: SyncedFile

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        return self.entry


ContentChangeEvent = Union[
    RemoteAdded, RemoteChanged, RemoteDeleted, LocalAdded, LocalChanged, LocalDeleted, RecordChanged, RecordMissing,
    Catalogued, Uncatalogued, RecordRead,
]
