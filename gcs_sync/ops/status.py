"""``status``: a dry run of ``pull``, from the same plan the server's sync makes.

With PACKAGE_FILES cache or redirect the folder holds a catalog of the bucket (its state)
and a file cache, not the files: ``compare_catalog`` says what the next check would change
in that catalog (``plan_catalog``), and what the cache holds.

It gathers what a sync gathers (one listing of the bucket, one scan of the folder, the
folder's last-synced state), asks ``sync.plan.plan_sync`` what a pull would do, and
reports that, reading only (nothing is written, not even the folder's state folder):

    plan                            reported as
    RemoteAdded                     only in the bucket: a pull downloads it
    RemoteDeleted                   removed from the bucket since the last sync
    local_only                      only here, never in the bucket: a pull leaves it
    RemoteChanged                   different: a pull replaces it with the bucket's
    (no event)                      same

One check the plan cannot make: a RemoteChanged file may hold the bucket's bytes already
(the state does not vouch for it, e.g. a folder filled by ``push``, or a file touched
here); a pull would download it again, but it is not a difference. ``_difference``
compares sha256 where one is at hand, so that only real differences are reported.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject
from gcs_sync.files import sha256_of
from gcs_sync.listings import CONTROL_FOLDER, LocalFile
from gcs_sync.ops.gather import BucketListing, FolderScan, list_bucket, scan_folder
from gcs_sync.ops.pull import PUSH_LOCAL_CHANGES
from gcs_sync.sync.cache import folder_usage
from gcs_sync.sync.events import Catalogued, RemoteAdded, RemoteChanged, RemoteDeleted
from gcs_sync.sync.plan import plan_catalog, plan_sync
from gcs_sync.sync.records import RecordStore
from gcs_sync.sync.state import StateFile, SyncedFile


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
    """What a pull of ``folder`` would change, and what already agrees. Reads only."""
    scan = scan_folder(folder, variable, missing_ok=True)
    state = StateFile(scan.folder / CONTROL_FOLDER, driver.url)  # reading it creates nothing
    synced = state.load()
    age = state.pulled_age()
    listing = state.last_listing()
    bucket = list_bucket(driver)
    plan = plan_sync(scan.fingerprints(), bucket.objects, synced, push_local_changes=PUSH_LOCAL_CHANGES)
    only_in_bucket: list[RemoteObject] = []
    removed: list[str] = []
    different: list[Difference] = []
    for event in plan.events:  # in name order
        if isinstance(event, RemoteAdded):
            only_in_bucket.append(event.remote)
        elif isinstance(event, RemoteDeleted):
            removed.append(event.name)
        elif isinstance(event, RemoteChanged):
            reason = _difference(scan.files[event.name], event.remote, plan.base_state.get(event.name))
            if reason is not None:
                different.append(Difference(event.name, reason))
        else:  # a pull pushes nothing: no other kind is planned
            raise AssertionError(f"a pull planned {type(event).__name__} for {event.name!r}")
    differing = {d.name for d in different}
    in_both = sorted(scan.files.keys() & bucket.objects.keys())
    return Comparison(
        folder=scan,
        bucket_url=driver.url,
        bucket=bucket,
        only_in_bucket=only_in_bucket,
        removed_from_bucket=removed,
        only_here=list(plan.local_only),
        different=different,
        same=[name for name in in_both if name not in differing],
        last_sync=None if age is None else time.time() - age,
        lag_seconds=age,
        last_listing=None if listing is None else dataclasses.asdict(listing),
        last_error=state.last_failure(),
    )


def _difference(local: LocalFile, remote: RemoteObject, synced: Optional[SyncedFile]) -> Optional[str]:
    """For a file the plan would download again: None if it has the bucket's content
    already, else why not (or why it can't be told). Hashes the local file only if the
    bucket's sha256 is known and the state cannot vouch for the local one."""
    local_unchanged = synced is not None and synced.local_fingerprint == local.fingerprint
    remote_unchanged = synced is not None and synced.remote_version == remote.version
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


# -- PACKAGE_FILES cache or redirect: the folder holds a catalog, not the files ----------


@dataclasses.dataclass
class CatalogComparison:
    """What the next check of a cache/redirect instance's folder would change in its
    catalog (its state), and what its file cache holds."""

    folder: Path
    mode: str
    bucket_url: str
    bucket: BucketListing
    catalogued: int
    not_catalogued: list[str]  # in the bucket, not in the catalog: the next check adds them
    changed: list[str]  # in both, but the bucket's file or record is another: the next check reads it
    gone: list[str]  # catalogued, gone from the bucket: the next check forgets them
    cache: Optional[dict[str, int]]  # the cache folder's usage; None if there is none
    last_sync: Optional[float]
    lag_seconds: Optional[float]
    last_listing: Optional[dict[str, object]]
    last_error: Optional[dict[str, object]]

    @property
    def in_sync(self) -> bool:
        return not (self.not_catalogued or self.changed or self.gone)


def compare_catalog(driver: FileStoreDriver, folder: Path, mode: str, cache_max_bytes: int) -> CatalogComparison:
    """The catalog of ``folder`` against the bucket (its files and their records), from
    the same pure plan a sync makes (``plan_catalog``). Reads only: nothing is created."""
    control = folder / CONTROL_FOLDER
    state = StateFile(control, driver.url)
    synced = state.load()
    age, listing = state.pulled_age(), state.last_listing()
    bucket = list_bucket(driver)
    records = RecordStore(driver).list_versions()
    plan = plan_catalog(bucket.objects, synced, records)
    # A RecordRead only learns a version the catalog lacked: not a difference.
    planned = sorted(event.name for event in plan.events if isinstance(event, Catalogued))
    return CatalogComparison(
        folder=folder, mode=mode, bucket_url=driver.url, bucket=bucket,
        catalogued=len(synced),
        not_catalogued=[name for name in planned if name not in synced],
        changed=[name for name in planned if name in synced],
        gone=sorted(synced.keys() - bucket.objects.keys()),
        cache=cache_usage(control / "cache", cache_max_bytes),
        last_sync=None if age is None else time.time() - age,
        lag_seconds=age,
        last_listing=None if listing is None else dataclasses.asdict(listing),
        last_error=state.last_failure(),
    )


def cache_usage(directory: Path, max_bytes: int) -> Optional[dict[str, int]]:
    """What the file cache folder holds (``folder_usage``); None if there is no such
    folder. Reads only."""
    return folder_usage(directory, max_bytes) if directory.is_dir() else None
