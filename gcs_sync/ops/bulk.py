"""Whole-folder operations behind the operator's commands: compare a folder with the
bucket (``status``), upload a folder into it (``push``), check every file's bytes
(``verify``). ``pull`` is ``StorageClient.sync`` itself.

Each one gathers (one listing of the bucket, one scan of the folder), decides per file,
then does its I/O, ``concurrency`` files at a time. None of them deletes anything in the
bucket; ``compare`` and ``verify`` write nothing anywhere (downloads for checking go to a
temporary folder outside the package folder). ``advance(n)`` is called with each file's
bytes as it is done, for a progress bar.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject
from gcs_sync.errors import ConfigError, ObjectExists, StorageError
from gcs_sync.files import TEMP_SUFFIX, fingerprint, sha256_of, temp_name
from gcs_sync.names import is_package_filename
from gcs_sync.sync.state import StateFile, SyncedFile

Advance = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")

# The folder's own bookkeeping (state, lock): never a package, never reported.
CONTROL_FOLDER = ".gcs_sync"


def _no_progress(_: int) -> None:
    pass


# -- gathering ------------------------------------------------------------------------


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


def scan_folder(folder: Path, variable: str, *, missing_ok: bool = False) -> FolderScan:
    """The package files directly in ``folder`` (those the index serves and syncs) and
    what else is there. A missing folder is a ConfigError naming ``variable`` (or, with
    ``missing_ok``, an empty scan)."""
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
    objects: dict[str, RemoteObject] = {}
    skipped: list[str] = []
    for name, obj in driver.list_objects().items():
        if is_package_filename(name):
            objects[name] = obj
        else:
            skipped.append(name)
    return BucketListing(objects, sorted(skipped))


def _parallel(work: Callable[[T], R], items: Iterable[T], concurrency: int) -> list[R]:
    """``work`` on every item, ``concurrency`` at a time, results in the items' order."""
    items = list(items)
    if concurrency <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(concurrency, thread_name_prefix="gcs-sync-cli") as pool:
        return list(pool.map(work, items))


def _sha256_by_download(driver: FileStoreDriver, remote: RemoteObject, scratch: Path) -> str:
    """The sha256 of the object's bytes, downloaded (at the listed version) to a
    temporary file that is removed at once."""
    temp = scratch / temp_name(remote.name)
    try:
        driver.download(remote.name, temp, remote.version)
        # Hashed here rather than trusting the driver's answer, which may come from metadata.
        return sha256_of(temp)
    finally:
        temp.unlink(missing_ok=True)


# -- status -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Difference:
    name: str
    reason: str


@dataclasses.dataclass
class Comparison:
    folder: FolderScan
    bucket_url: str
    bucket: BucketListing
    only_in_bucket: list[RemoteObject]  # a pull downloads them
    removed_from_bucket: list[str]  # here, synced before, gone from the bucket: a pull removes them
    only_here: list[str]  # never in the bucket: a pull leaves them; push uploads them
    different: list[Difference]  # a pull replaces them with the bucket's
    same: list[str]
    last_sync: Optional[float]  # when the folder was last found current (epoch seconds)
    lag_seconds: Optional[float]
    last_listing: Optional[dict[str, object]]
    last_error: Optional[dict[str, object]]

    @property
    def in_sync(self) -> bool:
        return not (self.only_in_bucket or self.removed_from_bucket or self.only_here or self.different)


def compare(driver: FileStoreDriver, folder: Path, variable: str) -> Comparison:
    """What differs between ``folder`` and the bucket, decided as a sync would: by the
    versions and fingerprints recorded in the folder's state when both last agreed. A file
    the state does not vouch for is compared by sha256 when the bucket's listing has one
    (hashing only that local file), else by size. Reads only."""
    scan = scan_folder(folder, variable, missing_ok=True)
    state = StateFile(scan.folder / CONTROL_FOLDER, driver.url)  # reading it creates nothing
    synced = state.load()
    age = state.pulled_age()
    listing = state.last_listing()
    bucket = list_bucket(driver)
    remote = bucket.objects
    only_in_bucket = [remote[name] for name in sorted(remote.keys() - scan.files.keys())]
    removed, only_here = [], []
    for name in sorted(scan.files.keys() - remote.keys()):
        (removed if name in synced else only_here).append(name)
    different, same = [], []
    for name in sorted(scan.files.keys() & remote.keys()):
        reason = _difference(scan.files[name], remote[name], synced.get(name))
        if reason is None:
            same.append(name)
        else:
            different.append(Difference(name, reason))
    return Comparison(
        folder=scan,
        bucket_url=driver.url,
        bucket=bucket,
        only_in_bucket=only_in_bucket,
        removed_from_bucket=removed,
        only_here=only_here,
        different=different,
        same=same,
        last_sync=None if age is None else time.time() - age,
        lag_seconds=age,
        last_listing=None if listing is None else dataclasses.asdict(listing),
        last_error=state.last_failure(),
    )


def _difference(local: LocalFile, remote: RemoteObject, synced: Optional[SyncedFile]) -> Optional[str]:
    """None if the local file has the bucket's content, else why not (or why it can't be told)."""
    local_unchanged = synced is not None and synced.local_fingerprint == local.fingerprint
    remote_unchanged = synced is not None and synced.remote_version == remote.version
    if local_unchanged and remote_unchanged:
        return None
    local_sha256 = synced.sha256 if local_unchanged and synced is not None else None
    remote_sha256 = remote.sha256 or (synced.sha256 if remote_unchanged and synced is not None else None)
    if remote_sha256 is not None:
        if local_sha256 is None:
            local_sha256 = sha256_of(local.path)
        return None if local_sha256 == remote_sha256 else "sha256 differs from the bucket's"
    if local.size != remote.size:
        return f"size differs ({local.size} bytes here, {remote.size} in the bucket)"
    if synced is None:
        return "not recorded as synced, and the bucket lists no sha256 to compare (verify compares the bytes)"
    if not local_unchanged:
        return "changed here since the last sync"
    return "the bucket has another version since the last sync"


# -- push -------------------------------------------------------------------------------

# What push did with each file (or, with dry_run, would do).
UPLOADED = "uploaded"
OVERWRITTEN = "overwritten"
PRESENT = "already in the bucket"
CONFLICT = "conflict"
FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class PushOutcome:
    name: str
    result: str
    size: int
    detail: str = ""


@dataclasses.dataclass
class PushReport:
    folder: FolderScan
    outcomes: list[PushOutcome]
    dry_run: bool
    hashed_by_download: list[str]  # bucket objects without a listed sha256, compared by their bytes
    marker_error: Optional[StorageError] = None

    def named(self, result: str) -> list[PushOutcome]:
        return [o for o in self.outcomes if o.result == result]

    @property
    def complete(self) -> bool:
        """Every package file of the folder is (or, dry, would be) in the bucket with its content."""
        return not (self.named(CONFLICT) or self.named(FAILED) or self.marker_error)


def push(
    driver: FileStoreDriver,
    scan: FolderScan,
    *,
    concurrency: int,
    overwrite: bool = False,
    dry_run: bool = False,
    advance: Advance = _no_progress,
    on_start: Callable[[int], None] = _no_progress,
) -> PushReport:
    """Upload every package file of ``folder`` that the bucket lacks, create-only, with its
    sha256 as metadata. A name the bucket has with the same content counts as done; with
    other content it is a conflict, left alone unless ``overwrite``. Then, if anything was
    uploaded, rewrite the change marker once so running instances list the bucket at
    their next check. Never deletes. ``on_start`` gets the total bytes to go through."""
    remote = list_bucket(driver).objects
    on_start(sum(f.size for f in scan.files.values()))
    hashed_by_download: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gcs-sync-push-") as scratch:

        def push_one(local: LocalFile) -> PushOutcome:
            try:
                return _push_one(driver, local, remote.get(local.name), Path(scratch), overwrite, dry_run,
                                 hashed_by_download)
            except StorageError as exc:
                return PushOutcome(local.name, FAILED, local.size, str(exc))
            except OSError as exc:
                return PushOutcome(local.name, FAILED, local.size, f"reading {local.path}: {exc}")
            finally:
                advance(local.size)

        outcomes = _parallel(push_one, sorted(scan.files.values(), key=lambda f: f.name), concurrency)
    report = PushReport(scan, outcomes, dry_run, sorted(hashed_by_download))
    if not dry_run and (report.named(UPLOADED) or report.named(OVERWRITTEN)):
        try:
            driver.touch_marker()
        except StorageError as exc:
            report.marker_error = exc
    return report


def _push_one(
    driver: FileStoreDriver,
    local: LocalFile,
    there: Optional[RemoteObject],
    scratch: Path,
    overwrite: bool,
    dry_run: bool,
    hashed_by_download: list[str],
) -> PushOutcome:
    sha256 = sha256_of(local.path)
    if there is not None:
        conflict = _content_conflict(driver, local, sha256, there, scratch, hashed_by_download)
        if conflict is None:
            return PushOutcome(local.name, PRESENT, local.size)
        if not overwrite:
            return PushOutcome(local.name, CONFLICT, local.size, conflict)
    replace = there is not None
    if not dry_run:
        try:
            stored = driver.upload(local.name, local.path, create_only=not replace, metadata={SHA256_KEY: sha256})
            if not stored.created:  # the same bytes were put there meanwhile
                return PushOutcome(local.name, PRESENT, local.size)
        except ObjectExists:
            # Stored by someone else since the listing (the driver accepts the same sha256).
            return PushOutcome(local.name, CONFLICT, local.size, "put into the bucket by someone else meanwhile")
    return PushOutcome(local.name, OVERWRITTEN if replace else UPLOADED, local.size)


def _content_conflict(
    driver: FileStoreDriver,
    local: LocalFile,
    sha256: str,
    there: RemoteObject,
    scratch: Path,
    hashed_by_download: list[str],
) -> Optional[str]:
    """None if the bucket's object has the local file's content, else how it differs."""
    if there.sha256 is not None:
        return None if there.sha256 == sha256 else "the bucket has other content (sha256 differs)"
    if there.size != local.size:
        return f"the bucket has other content ({there.size} bytes there, {local.size} here)"
    hashed_by_download.append(local.name)  # list.append is atomic: safe from the pool's threads
    if _sha256_by_download(driver, there, scratch) == sha256:
        return None
    return "the bucket has other content (sha256 of its bytes differs)"


# -- verify -----------------------------------------------------------------------------

MATCH = "match"
MISMATCH = "mismatch"
MISSING_IN_BUCKET = "missing from the bucket"
MISSING_HERE = "missing here"
UNCHECKED = "could not be checked"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    result: str
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

    def named(self, result: str) -> list[Check]:
        return [c for c in self.checks if c.result == result]

    @property
    def all_match(self) -> bool:
        return all(c.result == MATCH for c in self.checks)


def verify(
    driver: FileStoreDriver,
    scan: FolderScan,
    *,
    concurrency: int,
    advance: Advance = _no_progress,
    on_start: Callable[[int], None] = _no_progress,
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
                bucket_sha256 = there.sha256 or _sha256_by_download(driver, there, Path(scratch))
            except StorageError as exc:
                return Check(name, UNCHECKED, detail=str(exc))
            except OSError as exc:
                return Check(name, UNCHECKED, detail=f"reading {local.path}: {exc}")
            finally:
                advance(local.size + (0 if there.sha256 else there.size))
            result = MATCH if local_sha256 == bucket_sha256 else MISMATCH
            return Check(name, result, local_sha256, bucket_sha256, by_download=there.sha256 is None)

        checks = _parallel(check, both, concurrency)
    checks += [Check(name, MISSING_IN_BUCKET) for name in scan.files.keys() - remote.keys()]
    checks += [Check(name, MISSING_HERE, bucket_sha256=remote[name].sha256) for name in remote.keys() - scan.files.keys()]
    checks.sort(key=lambda c: c.name)
    return VerifyReport(scan, driver.url, checks, listing.skipped)
