"""``backfill`` and ``yank``: the records (``gcs_sync.records``) of the package files in
the bucket, kept by the operator.

``backfill`` gives every package object of the bucket a record that describes its
bytes: objects put there by other tools (or a stock pypiserver's folder copied in) have
none. ``set_yanked`` marks a release's files yanked (PEP 592) or not; only their records
change, never the files. Both add what they wrote to the change feed (``sync.feed``), so
running instances pick the records up within their usual bound. Neither deletes: an
orphan record (its package file is gone) is reported, not removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import enum
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pypiserver.pkg_helpers import guess_pkgname_and_version

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject
from gcs_sync.drivers.base import Version as ObjectVersion
from gcs_sync.errors import ObjectChanged, ObjectExists, StorageError
from gcs_sync.files import sha256_of, temp_name
from gcs_sync.ops.gather import list_bucket
from gcs_sync.ops.transfers import Advance, no_progress, parallel
from gcs_sync.records.compute import compute_record_or_note_problem
from gcs_sync.records.record import METADATA_FOLDER, FileRecord, metadata_object, upload_time
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from gcs_sync.sync.records import RecordStore

log = logging.getLogger(__name__)


class Backfilled(enum.Enum):
    """What backfill did for one package object."""

    COMPUTED = "computed"
    PRESENT = "already there"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class BackfillOutcome:
    name: str
    result: Backfilled
    size: int
    detail: str = ""
    # For COMPUTED: a file that is not what its name says, why (its record notes it).
    problem: str = ""


@dataclasses.dataclass
class BackfillReport:
    bucket_url: str
    outcomes: list[BackfillOutcome]
    skipped: list[str]  # names under the prefix that are not package files
    orphans: list[str]  # records whose package file is not in the bucket (left alone)
    feed_error: Optional[StorageError] = None

    def named(self, result: Backfilled) -> list[BackfillOutcome]:
        return [o for o in self.outcomes if o.result == result]

    @property
    def complete(self) -> bool:
        """Every package object now has a record that describes its bytes."""
        return not (self.named(Backfilled.FAILED) or self.feed_error)


class ReleaseNotFound(LookupError):
    """No package file in the bucket belongs to that project and version."""

    def __init__(self, project: str, version: str) -> None:
        self.project = project
        self.version = version
        super().__init__(f"no files of {project} {version} in the bucket")


def backfill(
    driver: FileStoreDriver,
    *,
    concurrency: int,
    advance: Advance = no_progress,
    on_start: Callable[[int], None] = no_progress,
) -> BackfillReport:
    """Give every package object a record that describes its bytes (see the module
    docstring): objects without one, or whose record is unreadable, describes other
    bytes or names a core metadata file the bucket lacks, are downloaded one at a time
    per worker to a temporary folder, and their record computed and stored (create-only,
    or over the stale record's version). A record another writer stored meanwhile counts
    as done if it describes the same bytes. Then what was written goes into the change
    feed. ``on_start`` gets the total bytes of the package objects."""
    listing = list_bucket(driver)
    store = RecordStore(driver)
    versions = store.list_versions()
    metadata_names = set(driver.list_note_versions(METADATA_FOLDER))
    objects = sorted(listing.objects.values(), key=lambda o: o.name)
    on_start(sum(o.size for o in objects))
    with tempfile.TemporaryDirectory(prefix="gcs-sync-backfill-") as scratch:

        def one(obj: RemoteObject) -> BackfillOutcome:
            try:
                return _backfill_one(store, obj, obj.name in versions, metadata_names, Path(scratch))
            except (StorageError, OSError, ValueError) as exc:
                return BackfillOutcome(obj.name, Backfilled.FAILED, obj.size, str(exc))
            finally:
                advance(obj.size)

        outcomes = parallel(one, objects, concurrency)
    orphans = sorted(set(versions) - set(listing.objects))
    report = BackfillReport(driver.url, outcomes, listing.skipped, orphans)
    if report.named(Backfilled.COMPUTED):
        try:
            computed = report.named(Backfilled.COMPUTED)
            ChangeFeed(driver).announce_files(ChangeKind.RECORD, ((outcome.name, None) for outcome in computed))
        except StorageError as exc:
            report.feed_error = exc
    return report


def _backfill_one(
    store: RecordStore, obj: RemoteObject, has_record: bool, metadata_names: set[str], scratch: Path,
) -> BackfillOutcome:
    """One object's record: checked (if the listing had one), else computed from its
    bytes and stored."""
    stale: Optional[ObjectVersion] = None
    record: Optional[FileRecord] = None
    if has_record:
        found = store.read(obj.name)
        if found is not None:
            record, stale = found
    # The listing's sha256 is the writer's claim (another tool may have left it stale): the
    # size must agree too, else the bytes are read.
    if record is not None and obj.sha256 is not None and record.size == obj.size \
            and _describes(record, obj.sha256, metadata_names):
        return BackfillOutcome(obj.name, Backfilled.PRESENT, obj.size)
    if record is not None and record.size != obj.size:
        record = None  # other bytes for sure: no need to compare digests
    with _downloaded(store.driver, obj, scratch) as (path, sha256):
        if record is not None and _describes(record, sha256, metadata_names):
            return BackfillOutcome(obj.name, Backfilled.PRESENT, obj.size)
        computed, metadata, problem = computed_record(
            path, obj.name, sha256, upload_time(obj.modified if obj.modified is not None else time.time()))
        if record is not None and record.sha256 == sha256:
            # Of these bytes, but its core metadata file is gone: what only the record knows stays.
            computed = dataclasses.replace(computed, upload_time=record.upload_time, uploader=record.uploader,
                                           yanked=record.yanked, yank_reason=record.yank_reason)
        written = write_record(store, computed, metadata, stale)
    if written is None:
        return BackfillOutcome(obj.name, Backfilled.PRESENT, obj.size, "stored by another writer meanwhile")
    return BackfillOutcome(obj.name, Backfilled.COMPUTED, obj.size, problem=problem)


def _describes(record: FileRecord, sha256: str, metadata_names: set[str]) -> bool:
    """The record is of these bytes, and the core metadata file it names is there."""
    return record.sha256 == sha256 and (
        record.metadata_sha256 is None or metadata_object(record.filename) in metadata_names)


@contextlib.contextmanager
def _downloaded(driver: FileStoreDriver, obj: RemoteObject, scratch: Path) -> Iterator[tuple[Path, str]]:
    """The object's bytes in a temporary file of ``scratch`` (removed after) and their sha256."""
    path = scratch / temp_name(obj.name)
    try:
        driver.download(obj.name, path, obj.version, obj.sha256)
        # Hashed here rather than trusting the driver's answer, which may come from metadata.
        yield path, sha256_of(path)
    finally:
        path.unlink(missing_ok=True)


def computed_record(path: Path, filename: str, sha256: str, when: str) -> tuple[FileRecord, Optional[bytes], str]:
    """The record (uploader None, uploaded ``when``) and core metadata file of the package
    file at ``path``, and, for a file that is not what its name says, the problem (its
    record then notes it and names no metadata; the file is still served)."""
    record, metadata, problem = compute_record_or_note_problem(
        path, filename, sha256=sha256, size=path.stat().st_size, upload_time=when)
    return record, metadata, problem or ""


def write_record(
    store: RecordStore, record: FileRecord, metadata: Optional[bytes], stale: Optional[ObjectVersion],
) -> Optional[FileRecord]:
    """Store ``record`` create-only (or over ``stale``); None if another writer stored one
    of the same bytes meanwhile (then theirs stays)."""
    try:
        store.write(record, metadata, create_only=stale is None, if_version=stale)
        return record
    except (ObjectExists, ObjectChanged) as exc:
        found = store.read(record.filename)
        theirs = None if found is None else found[0]
        if theirs is not None and theirs.sha256 == record.sha256:
            return None
        raise StorageError("record", record.filename,
                           "another writer stored a record of other bytes meanwhile; run again") from exc


def release_files(driver: FileStoreDriver, project: str, version: str) -> list[RemoteObject]:
    """The package objects of ``project`` (PEP 503-normalised) at ``version`` (as
    pypiserver reads it from the filename, normalised by PEP 440 where it parses)."""
    wanted = (canonicalize_name(project), _version_key(version))
    found = []
    for obj in list_bucket(driver).objects.values():
        guessed = guess_pkgname_and_version(obj.name)
        if guessed is not None and (canonicalize_name(guessed[0]), _version_key(guessed[1])) == wanted:
            found.append(obj)
    return sorted(found, key=lambda o: o.name)


def _version_key(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def set_yanked(
    driver: FileStoreDriver, project: str, version: str, *, yanked: bool, reason: Optional[str] = None,
) -> list[FileRecord]:
    """Mark every file of the release yanked (with ``reason``) or not, and return their
    records as they now are. A file without a record that describes it gets one first
    (as backfill gives it). Only the records change, never the files. Then one feed
    entry per file (a failure to write one is logged: the instances then see the change
    at their next full listing). Raises ReleaseNotFound if the bucket has no file of
    that release."""
    files = release_files(driver, project, version)
    if not files:
        raise ReleaseNotFound(project, version)
    store = RecordStore(driver)
    versions = store.list_versions()
    metadata_names = set(driver.list_note_versions(METADATA_FOLDER))
    with tempfile.TemporaryDirectory(prefix="gcs-sync-yank-") as scratch:
        for obj in files:
            _backfill_one(store, obj, obj.name in versions, metadata_names, Path(scratch))
    records: list[FileRecord] = []
    for obj in files:
        after = store.set_yank(obj.name, yanked, reason if yanked else None)
        if after is None:
            raise StorageError("yank", obj.name, "its record was removed meanwhile (with the file?); run again")
        records.append(after)
    feed = ChangeFeed(driver)
    for record in records:
        feed.announce_quietly(ChangeKind.RECORD, record.filename)
    return records
