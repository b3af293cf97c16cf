"""What every operation gathers first: the package files of a folder, and of the bucket,
by the rule the sync uses (``gcs_sync.listings``), so that what the commands report is
what a sync sees.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject
from gcs_sync.errors import ConfigError
from gcs_sync.listings import LocalFile, scan_package_folder, split_listing


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
    entries = scan_package_folder(folder)
    return FolderScan(folder, True, entries.files, entries.skipped)


@dataclasses.dataclass(frozen=True)
class BucketListing:
    objects: dict[str, RemoteObject]  # the package objects, those the index syncs
    skipped: list[str]  # other names under the prefix, never synced


def list_bucket(driver: FileStoreDriver) -> BucketListing:
    """One listing of the bucket, split into package objects and the other names."""
    objects, skipped = split_listing(driver.list_objects())
    return BucketListing(objects, skipped)
