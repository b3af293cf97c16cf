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
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Union

from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject, Version
from gcs_sync.files import sha256_of
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import SyncedFile


class Transfers(Protocol):
    driver: FileStoreDriver
    folder: PackageFolder


@dataclasses.dataclass(frozen=True)
class _RemoteCopy:
    """A bucket version to bring here: RemoteAdded and RemoteChanged share the strategy
    (an event equals only one of its own kind: dataclasses compare the class too)."""

    name: str
    remote: RemoteObject

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        # The digest comes with the download (object metadata, or hashed while written):
        # computed once per file version, never per request.
        with io.folder.replacing(self.remote.name) as temp:
            sha256 = io.driver.download(self.remote.name, temp, self.remote.version, listed_sha256=self.remote.sha256)
        return SyncedFile(self.remote.version, io.folder.fingerprint(self.remote.name), sha256)


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
        return None


@dataclasses.dataclass(frozen=True)
class LocalAdded:
    name: str
    local_fingerprint: str

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        path = io.folder.file_path(self.name)
        sha256 = sha256_of(path)
        remote = io.driver.upload(self.name, path, create_only=True, metadata={SHA256_KEY: sha256})
        return SyncedFile(remote.version, self.local_fingerprint, sha256)


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
        return SyncedFile(remote.version, self.local_fingerprint, sha256)


@dataclasses.dataclass(frozen=True)
class LocalDeleted:
    name: str
    remote_version: Version

    def apply(self, io: Transfers) -> Optional[SyncedFile]:
        # Conditional: an upload that replaced the object since the listing is kept.
        io.driver.delete(self.name, if_version=self.remote_version)
        return None


ContentChangeEvent = Union[RemoteAdded, RemoteChanged, RemoteDeleted, LocalAdded, LocalChanged, LocalDeleted]
