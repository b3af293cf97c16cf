"""``verify``: hash every local package file and compare it with the bucket object's
sha256. Reads only, on both sides (downloads for checking go to a temporary folder
outside the package folder).
"""

from __future__ import annotations

import dataclasses
import enum
import tempfile
from pathlib import Path
from typing import Callable, Optional

from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.errors import StorageError
from gcs_sync.files import sha256_of
from gcs_sync.ops.gather import FolderScan, list_bucket
from gcs_sync.ops.transfers import Advance, no_progress, parallel, sha256_by_download


class Verified(enum.Enum):
    """What verify found for a file."""

    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING_IN_BUCKET = "missing from the bucket"
    MISSING_HERE = "missing here"
    UNCHECKED = "could not be checked"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    result: Verified
    local_sha256: Optional[str] = None
    bucket_sha256: Optional[str] = None
    by_download: bool = False  # the bucket's sha256 was computed from its downloaded bytes
    detail: str = ""


@dataclasses.dataclass
class VerifyReport:
    folder: FolderScan
    bucket_url: str
    checks: list[Check]
    skipped_bucket_objects: list[str]

    def named(self, result: Verified) -> list[Check]:
        return [c for c in self.checks if c.result == result]

    @property
    def all_match(self) -> bool:
        return all(c.result == Verified.MATCH for c in self.checks)


def verify(
    driver: FileStoreDriver,
    scan: FolderScan,
    *,
    concurrency: int,
    advance: Advance = no_progress,
    on_start: Callable[[int], None] = no_progress,
) -> VerifyReport:
    """Hash every local package file and compare it with the bucket object's sha256:
    its metadata as listed, or, where the listing has none, the sha256 of its bytes,
    downloaded to a temporary folder. Reads only, on both sides."""
    listing = list_bucket(driver)
    remote = listing.objects
    both = sorted(scan.files.keys() & remote.keys())
    on_start(sum(scan.files[n].size + (0 if remote[n].sha256 else remote[n].size) for n in both))
    with tempfile.TemporaryDirectory(prefix="gcs-sync-verify-") as scratch:

        def check(name: str) -> Check:
            local, there = scan.files[name], remote[name]
            try:
                local_sha256 = sha256_of(local.path)
                bucket_sha256 = there.sha256 or sha256_by_download(driver, there, Path(scratch))
            except StorageError as exc:
                return Check(name, Verified.UNCHECKED, detail=str(exc))
            except OSError as exc:
                return Check(name, Verified.UNCHECKED, detail=f"reading {local.path}: {exc}")
            finally:
                advance(local.size + (0 if there.sha256 else there.size))
            result = Verified.MATCH if local_sha256 == bucket_sha256 else Verified.MISMATCH
            return Check(name, result, local_sha256, bucket_sha256, by_download=there.sha256 is None)

        checks = parallel(check, both, concurrency)
    checks += [Check(name, Verified.MISSING_IN_BUCKET) for name in scan.files.keys() - remote.keys()]
    checks += [Check(name, Verified.MISSING_HERE, bucket_sha256=remote[name].sha256) for name in remote.keys() - scan.files.keys()]
    checks.sort(key=lambda c: c.name)
    return VerifyReport(scan, driver.url, checks, listing.skipped)
