"""``push``: upload a folder's package files that the bucket lacks, create-only, with
their sha256 as metadata, and store each file's record (``gcs_sync.records``) beside it;
then add them to the change feed (one entry per file, or one "list everything" entry for
many), so running instances take them at their next check. Never deletes anything in the bucket.
"""

from __future__ import annotations

import dataclasses
import enum
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, RemoteObject
from gcs_sync.errors import ObjectExists, StorageError
from gcs_sync.files import sha256_of
from gcs_sync.listings import LocalFile
from gcs_sync.ops.gather import FolderScan, list_bucket
from gcs_sync.ops.records import computed_record, write_record
from gcs_sync.ops.transfers import Advance, no_progress, parallel, sha256_by_download
from gcs_sync.records.record import upload_time
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from gcs_sync.sync.records import RecordStore


class Pushed(enum.Enum):
    """What push did with a file (or, with dry_run, would do)."""

    UPLOADED = "uploaded"
    OVERWRITTEN = "overwritten"
    PRESENT = "already in the bucket"
    CONFLICT = "conflict"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class PushOutcome:
    name: str
    result: Pushed
    size: int
    detail: str = ""
    # The file's record: stored ("stored"), already there (""), or why it could not be.
    record: str = ""
    # A file that is not what its name says (pushed anyway): the problem its record notes.
    problem: str = ""
    # The sha256 of the bytes pushed (for the change feed's entry); None if not known.
    sha256: Optional[str] = None


@dataclasses.dataclass
class PushReport:
    folder: FolderScan
    outcomes: list[PushOutcome]
    dry_run: bool
    hashed_by_download: list[str]  # bucket objects without a listed sha256, compared by their bytes
    feed_error: Optional[StorageError] = None

    def named(self, result: Pushed) -> list[PushOutcome]:
        return [o for o in self.outcomes if o.result == result]

    @property
    def records_stored(self) -> list[PushOutcome]:
        return [o for o in self.outcomes if o.record == RECORD_STORED]

    @property
    def records_failed(self) -> list[PushOutcome]:
        return [o for o in self.outcomes if o.record not in ("", RECORD_STORED)]

    @property
    def bad_files(self) -> list[PushOutcome]:
        """Files pushed with a record that notes why their metadata could not be read."""
        return [o for o in self.outcomes if o.problem]

    @property
    def complete(self) -> bool:
        """Every package file of the folder is (or, dry, would be) in the bucket with its
        content and its record."""
        return not (self.named(Pushed.CONFLICT) or self.named(Pushed.FAILED) or self.records_failed
                    or self.feed_error)


RECORD_STORED = "stored"


def push(
    driver: FileStoreDriver,
    scan: FolderScan,
    *,
    concurrency: int,
    overwrite: bool = False,
    dry_run: bool = False,
    advance: Advance = no_progress,
    on_start: Callable[[int], None] = no_progress,
) -> PushReport:
    """Upload every package file of ``folder`` that the bucket lacks, create-only, with its
    sha256 as metadata. A name the bucket has with the same content counts as done; with
    other content it is a conflict, left alone unless ``overwrite``. Then, if anything was
    uploaded, add it to the change feed (one entry per file, or one "list everything"
    entry for many), so running instances take it at their next check. Never deletes. ``on_start`` gets the total bytes to go through."""
    remote = list_bucket(driver).objects
    store = RecordStore(driver)
    records = {} if dry_run else store.list_versions()
    on_start(sum(f.size for f in scan.files.values()))
    hashed_by_download: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gcs-sync-push-") as scratch:

        def push_one(local: LocalFile) -> PushOutcome:
            try:
                there = remote.get(local.name)
                outcome, sha256 = _push_one(driver, local, there, Path(scratch), overwrite, dry_run,
                                            hashed_by_download)
                if dry_run or outcome.result in (Pushed.CONFLICT, Pushed.FAILED):
                    return outcome
                outcome = dataclasses.replace(outcome, sha256=sha256)
                return _with_record(store, outcome, local, sha256, there, local.name in records)
            except StorageError as exc:
                return PushOutcome(local.name, Pushed.FAILED, local.size, str(exc))
            except OSError as exc:
                return PushOutcome(local.name, Pushed.FAILED, local.size, f"reading {local.path}: {exc}")
            finally:
                advance(local.size)

        outcomes = parallel(push_one, sorted(scan.files.values(), key=lambda f: f.name), concurrency)
    report = PushReport(scan, outcomes, dry_run, sorted(hashed_by_download))
    if not dry_run and (report.named(Pushed.UPLOADED) or report.named(Pushed.OVERWRITTEN) or report.records_stored):
        changed = {outcome.name: outcome.sha256 for outcome in outcomes
                   if outcome.result in (Pushed.UPLOADED, Pushed.OVERWRITTEN) or outcome in report.records_stored}
        try:
            ChangeFeed(driver).announce_files(ChangeKind.ADDED, sorted(changed.items()))
        except StorageError as exc:
            report.feed_error = exc
    return report


def _push_one(
    driver: FileStoreDriver,
    local: LocalFile,
    there: Optional[RemoteObject],
    scratch: Path,
    overwrite: bool,
    dry_run: bool,
    hashed_by_download: list[str],
) -> tuple[PushOutcome, str]:
    """What push did with the file, and the file's sha256."""
    sha256 = sha256_of(local.path)
    if there is not None:
        conflict = _content_conflict(driver, local, sha256, there, scratch, hashed_by_download)
        if conflict is None:
            return PushOutcome(local.name, Pushed.PRESENT, local.size), sha256
        if not overwrite:
            return PushOutcome(local.name, Pushed.CONFLICT, local.size, conflict), sha256
    replace = there is not None
    if not dry_run:
        try:
            stored = driver.upload(local.name, local.path, create_only=not replace, metadata={SHA256_KEY: sha256})
            if not stored.created:  # the same bytes were put there meanwhile
                return PushOutcome(local.name, Pushed.PRESENT, local.size), sha256
        except ObjectExists:
            # Stored by someone else since the listing (the driver accepts the same sha256).
            outcome = PushOutcome(local.name, Pushed.CONFLICT, local.size, "put into the bucket by someone else meanwhile")
            return outcome, sha256
    return PushOutcome(local.name, Pushed.OVERWRITTEN if replace else Pushed.UPLOADED, local.size), sha256


def _with_record(
    store: RecordStore, outcome: PushOutcome, local: LocalFile, sha256: str, there: Optional[RemoteObject],
    listed: bool,
) -> PushOutcome:
    """``outcome`` once the file in the bucket (the local file's bytes) has a record of
    those bytes: computed from the local file and stored, create-only or over a stale
    record (of an earlier file of that name) at the version read. A file already in the
    bucket keeps a record that describes it, and gets one dated by the object's time."""
    stale = None
    if listed:
        found = store.read(local.name)
        if found is not None:
            record, stale = found
            if record is not None and record.sha256 == sha256 and outcome.result == Pushed.PRESENT:
                return outcome
    uploaded = outcome.result != Pushed.PRESENT
    when = time.time() if uploaded or there is None or there.modified is None else there.modified
    computed, metadata, problem = computed_record(local.path, local.name, sha256, upload_time(when))
    try:
        written = write_record(store, computed, metadata, stale)
    except StorageError as exc:
        return dataclasses.replace(outcome, record=f"record not stored: {exc}", problem=problem)
    return dataclasses.replace(outcome, record="" if written is None else RECORD_STORED, problem=problem)


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
    if sha256_by_download(driver, there, scratch) == sha256:
        return None
    return "the bucket has other content (sha256 of its bytes differs)"
