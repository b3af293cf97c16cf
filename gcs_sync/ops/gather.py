"""What every operation gathers first: the package files of a folder, and of the bucket.

A package file is what the index serves and syncs: a regular file directly in the folder
(or an object directly under the prefix) with a package filename
(``names.is_package_filename``). Everything else is reported as skipped, with the reason.
The folder's fingerprints are the sync's own (``files.fingerprint``), so a scan compares
with the folder's last-synced state.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject
from gcs_sync.errors import ConfigError
from gcs_sync.files import TEMP_SUFFIX, fingerprint
from gcs_sync.names import is_package_filename

# The folder's own bookkeeping (state, lock): never a package, never reported.
CONTROL_FOLDER = ".gcs_sync"


@dataclasses.dataclass(frozen=True)
class LocalFile:
    name: str
    path: Path
    size: int
    fingerprint: str  # as PackageFolder.scan gives it, so it compares with the state


@dataclasses.dataclass(frozen=True)
class FolderScan:
    folder: Path
    exists: bool
    files: dict[str, LocalFile]
    # Entries that are not package files, with the reason, for push to report.
    skipped: list[tuple[str, str]]

    def fingerprints(self) -> dict[str, str]:
        """The local side of a sync plan: each package file's fingerprint."""
        return {name: local.fingerprint for name, local in self.files.items()}


def scan_folder(folder: Path, variable: str, *, missing_ok: bool = False) -> FolderScan:
    """The package files directly in ``folder`` and what else is there. A missing folder
    is a ConfigError naming ``variable`` (or, with ``missing_ok``, an empty scan)."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        if missing_ok and not folder.exists():
            return FolderScan(folder, False, {}, [])
        raise ConfigError(variable, f"{folder} is not an existing folder")
    files: dict[str, LocalFile] = {}
    skipped: list[tuple[str, str]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == CONTROL_FOLDER or (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                continue  # the index's own bookkeeping and temporary files
            if entry.is_dir(follow_symlinks=False):
                skipped.append((entry.name + "/", "a folder: only files directly in the folder are packages"))
            elif not entry.is_file(follow_symlinks=False):
                skipped.append((entry.name, "not a regular file (a link or a special file)"))
            elif not is_package_filename(entry.name):
                skipped.append((entry.name, "not a package filename"))
            else:
                stat = entry.stat(follow_symlinks=False)
                files[entry.name] = LocalFile(entry.name, Path(entry.path), stat.st_size, fingerprint(stat))
    return FolderScan(folder, True, files, sorted(skipped))


@dataclasses.dataclass(frozen=True)
class BucketListing:
    objects: dict[str, RemoteObject]  # the package objects, those the index syncs
    skipped: list[str]  # other names under the prefix, never synced


def list_bucket(driver: FileStoreDriver) -> BucketListing:
    """One listing of the bucket, split into package objects and the other names."""
    return split_listing(driver.list_objects())


def split_listing(listing: Mapping[str, RemoteObject]) -> BucketListing:
    objects: dict[str, RemoteObject] = {}
    skipped: list[str] = []
    for name, obj in listing.items():
        if is_package_filename(name):
            objects[name] = obj
        else:
            skipped.append(name)
    return BucketListing(objects, sorted(skipped))
