"""``verify``: hash every local package file and compare it with the bucket object's
sha256. Reads only, on both sides (downloads for checking go to a temporary folder
outside the package folder). With PACKAGE_FILES cache or redirect, the files here are the
cache's: ``verify_cache`` hashes each and compares it with the digest it is stored under.
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
from gcs_sync.sync.cache import is_cached_name
from gcs_sync.sync.state import SyncedFile


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


# -- PACKAGE_FILES cache or redirect: the file cache -------------------------------------


@dataclasses.dataclass(frozen=True)
class CachedCheck:
    sha256: str  # the cached file's name: the digest its bytes must have
    result: Verified
    filenames: tuple[str, ...] = ()  # the catalogued files with these bytes (none: evicted in time)
    detail: str = ""


@dataclasses.dataclass
class CacheVerifyReport:
    directory: Path
    checks: list[CachedCheck]

    def named(self, result: Verified) -> list[CachedCheck]:
        return [c for c in self.checks if c.result == result]

    @property
    def all_match(self) -> bool:
        return all(c.result == Verified.MATCH for c in self.checks)


def verify_cache(
    directory: Path,
    catalog: dict[str, SyncedFile],
    *,
    concurrency: int,
    advance: Advance = no_progress,
    on_start: Callable[[int], None] = no_progress,
) -> CacheVerifyReport:
    """Hash every file of the cache folder and compare it with its name (the digest it was
    stored under, which is what a hit serves without hashing again); say which catalogued
    files each one is. Reads only. A missing folder is an empty cache."""
    if not directory.is_dir():
        return CacheVerifyReport(directory, [])
    by_sha256: dict[str, list[str]] = {}
    for name, entry in catalog.items():
        if entry.sha256:
            by_sha256.setdefault(entry.sha256, []).append(name)
    cached = sorted(path for path in directory.iterdir() if is_cached_name(path.name))
    on_start(sum(path.stat().st_size for path in cached))

    def check(path: Path) -> CachedCheck:
        names = tuple(sorted(by_sha256.get(path.name, ())))
        try:
            size = path.stat().st_size
            digest = sha256_of(path)
        except FileNotFoundError:
            return CachedCheck(path.name, Verified.UNCHECKED, names, "evicted while checked")
        except OSError as exc:
            return CachedCheck(path.name, Verified.UNCHECKED, names, f"reading {path}: {exc}")
        advance(size)
        if digest != path.name:
            return CachedCheck(path.name, Verified.MISMATCH, names, f"its bytes hash to {digest}")
        return CachedCheck(path.name, Verified.MATCH, names)

    return CacheVerifyReport(directory, sorted(parallel(check, cached, concurrency), key=lambda c: c.sha256))
