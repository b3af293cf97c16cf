"""A request's own writes: its uploads stored in the bucket (all or none, as far as the
bucket allows) and its removals, then placed in the folder. The bucket transfers happen
outside the folder lock; only placing the files here takes it, briefly.

Each uploaded file is stored with its metadata record and core metadata file, written
first: the file's create-only write is the upload's commit, so a failure after a record
never removes a file (another request may have been answered 200 for the same bytes),
and a record without its file is never served (readers take records only for the files
a listing shows, and only if they describe those bytes). A record already there for
these very bytes is kept (an identical retry keeps the first upload's time and yank); a
record of other bytes is replaced at the version read. A failed upload removes the
records it wrote, each at the version it wrote, unless their file stays.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import filelock

from gcs_sync.drivers.base import SHA256_KEY, FileStoreDriver, StoredObject
from gcs_sync.errors import ObjectChanged, ObjectExists, StorageError, StorageUnavailable
from gcs_sync.sync.breaker import WriteBreaker
from gcs_sync.sync.folder import PackageFolder, StagedFile
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from gcs_sync.sync.pending import ClaimReason, Intent, PendingUploads
from gcs_sync.sync.records import RecordStore, StoredRecord
from gcs_sync.sync.report import BucketMeter, log_bucket_write
from gcs_sync.sync.state import CATALOGUED, StateFile, SyncedFile
from gcs_sync.sync.tracked import TrackedState

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

# Once the bucket has a request's change, placing it in the folder is only a convenience
# (the next sync does it anyway), so the request does not wait long for the lock.
_LOCK_WAIT_AFTER_WRITE = 2.0
_TAKEN_FOR_ABANDONED = "this upload took so long that it was taken for an abandoned one and removed. Try again"


class RequestWrites:
    def __init__(
        self,
        driver: FileStoreDriver,
        folder: PackageFolder,
        state: StateFile,
        lock: filelock.BaseFileLock,
        *,
        known_state: TrackedState,
        breaker: WriteBreaker,
        pending: PendingUploads,
        feed: ChangeFeed,
        records: RecordStore,
        catalog: bool = False,
    ) -> None:
        self.driver = driver
        self._records = records
        self.folder = folder
        self.state = state
        self._lock = lock
        # The synced state as last read, kept current by reading only what changed.
        self._known_state = known_state
        self._breaker = breaker
        self._pending = pending
        self._feed = feed
        # PACKAGE_FILES cache or redirect: an upload is catalogued here, not kept (the
        # cache fetches it on its first download, within its bound).
        self._catalog = catalog

    def publish(self, staged: Sequence[StagedFile], *, overwrite: bool) -> list[StoredObject]:
        """Store a request's uploads in the bucket (create-only unless ``overwrite``), then
        make them all visible locally at once. All or none, as far as the bucket allows:
        if one fails, the create-only uploads already made are deleted again; what could
        not be undone is in the error's ``changed_before_failure``. Raises ObjectExists or
        another StorageError; the caller removes the staged files in every case. Once the
        bucket has the files the upload counts as done: a local problem after that only
        delays this folder until its next sync."""
        stored: list[StoredObject] = []
        records: dict[str, StoredRecord] = {}  # by file name: the records stored with the files
        known = {} if overwrite else self._known_state.lookup(upload.name for upload in staged)
        self._breaker.check(staged[0].name)
        # Several files: an intent names them first, so a request killed between its
        # writes leaves nothing that a sync serves as a release (pending.py).
        intent: Optional[Intent] = None
        writing: Optional[str] = None  # the file whose write is under way
        try:
            if len(staged) > 1 and not overwrite:
                intent = self._pending.begin(staged)
            for upload in staged:
                if intent is not None:
                    self._pending.check_time(intent, upload.name)
                here = known.get(upload.name)
                if here is not None and here.sha256 != upload.sha256:
                    # This folder's view may be stale (removed through another instance):
                    # only the bucket may say "exists", so ask it (one metadata read).
                    self._refuse_if_stored_otherwise(upload)
                written = self._store_record(upload)
                if written is not None:
                    records[upload.name] = written
                meter = BucketMeter(self.driver)
                writing = upload.name
                remote = self.driver.upload(
                    upload.name, upload.path, create_only=not overwrite, metadata={SHA256_KEY: upload.sha256},
                    token=None if intent is None else intent.token(upload.name),
                )
                writing = None
                stored.append(remote)
                log_bucket_write(log, "store", upload.name, self.driver.url, meter,
                                 version=remote.version, size=upload.size)
                # A new file (create-only: with OVERWRITE an identical upload also writes a
                # version, and keeps the record) takes no record left by a removed one.
                fresh = remote.created and not overwrite
                if upload.record is not None and (written is None or (fresh and written.record_written is None)):
                    # Left until the file was ours, or another's record kept: see _store_record.
                    after = self._store_record_after(upload, fresh)
                    if after is not None:
                        records[upload.name] = after
            for remote in stored:
                if not remote.created:  # about to be covered by our 200: no clean-up may take it
                    self._pending.adopt(remote, intent)
            if intent is not None and not self._pending.finish(intent):
                # Not ours any more. Claimed (it still exists): a clean-up took this slow
                # request for a dead one and its files are going: no 200. Gone: adopted by
                # a retry, or a clean-up done (it deletes the files before the intent): a
                # 200 only if every file is still ours.
                if self.driver.stat(intent.name) is not None:
                    raise StorageError("upload", intent.name, _TAKEN_FOR_ABANDONED)
                self._check_still_stored(stored)
        except StorageError as exc:
            self._note_write_outcome(exc)
            # A write the bucket did not answer may still land: that file's outcome is unknown.
            unknown = [writing] if writing is not None and isinstance(exc, StorageUnavailable) else []
            exc.changed_before_failure = self._undo_failed_publish(stored, intent, overwrite, unknown)
            self._undo_records(records, stored, keep=set(exc.changed_before_failure) | set(unknown))
            # Even undone, the objects existed for a while (another instance may have
            # listed them): let everyone look. Not after a write the bucket did not
            # answer and nothing stored: the feed write would wait a whole budget
            # again on a bucket that just failed; if that write landed late, other
            # instances see it at their next full listing.
            for remote in stored:
                if not remote.created:
                    continue
                if remote.name not in exc.changed_before_failure:
                    self._feed.announce_quietly(ChangeKind.REMOVED, remote.name)
                elif intent is None:
                    self._feed.announce_quietly(ChangeKind.ADDED, remote.name, remote.sha256)
                # A file that stays under its intent is hidden until the intent is done
                # with: the clean-up (pending.py) announces what it deletes; a retry that
                # adopts it, what it keeps.
            raise
        self._breaker.answered()
        # After the files: an entry is only ever read once its file is in place. The upload
        # stands whether or not its entry could be written (then others list it later).
        for remote in stored:
            self._feed.announce_quietly(ChangeKind.ADDED, remote.name, remote.sha256)
        try:
            with self._lock.acquire(timeout=_LOCK_WAIT_AFTER_WRITE):
                for upload, remote in zip(staged, stored):
                    kept = records.get(upload.name)
                    if self._catalog:
                        upload.path.unlink(missing_ok=True)
                        entry = SyncedFile(remote.version, CATALOGUED, upload.sha256)
                    else:
                        if upload.metadata is not None:
                            self.folder.write_metadata(upload.name, upload.metadata)
                        local = self.folder.install(upload.path, upload.name)
                        entry = SyncedFile(remote.version, local, upload.sha256)
                    if kept is not None:
                        entry = entry.with_record(kept.record, kept.version)
                    self.state.record(upload.name, entry)
        except filelock.Timeout:
            log.warning("%s in the bucket but the folder lock was busy; they appear here on the next sync",
                        [u.name for u in staged])
        except OSError as exc:
            log.error("%s in the bucket but could not be placed in %s (%s); the next sync retries",
                      [u.name for u in staged], self.folder.path, exc)
        return stored

    def _store_record(self, upload: StagedFile, *, file_is_ours: bool = False,
                      created: bool = False) -> Optional[StoredRecord]:
        """Store ``upload``'s record and core metadata file, before the file itself. A
        record of these very bytes already there is kept (an identical retry keeps the
        first upload's time and yank state), unless this request has just ``created`` the
        file (the record was left by a file since removed: ours replaces it). A record of
        other bytes is replaced at the version read (an undo puts it back), unless its
        file is still there and not ours yet (``file_is_ours``): then it is left to the
        file's write, which refuses other bytes (409), and for the same bytes (or an
        overwrite) is followed by this again. None: nothing stored (yet)."""
        if upload.record is None:
            return None
        for _ in range(3):
            found = self._records.read(upload.name)
            theirs = None if found is None else found[0]
            if found is not None and theirs is not None and theirs.sha256 == upload.sha256 and not created:
                return StoredRecord(theirs, found[1])
            if found is not None and not file_is_ours and self.driver.stat(upload.name) is not None:
                return None
            try:
                return self._records.write(
                    upload.record, upload.metadata, create_only=found is None,
                    if_version=None if found is None else found[1],
                    replacing=None if theirs is None else theirs.to_bytes(),
                )
            except (ObjectExists, ObjectChanged):
                continue  # another writer's record came between: look at it
        # Not ObjectExists: that would read as "this file is already there" (a 409).
        raise StorageError("upload", upload.name, "its metadata record kept changing while it was written: "
                           "another upload of this name is under way")

    def _store_record_after(self, upload: StagedFile, fresh: bool) -> Optional[StoredRecord]:
        """The record of a file now in the bucket, where it could not be stored before it
        (a record of other bytes, with its file, was there) or was another's (this request
        created the file). The file stays whatever happens here (another request may be
        answered 200 for the same bytes): a failure is logged, and a sync computes the
        record (``RecordMissing``)."""
        try:
            return self._store_record(upload, file_is_ours=True, created=fresh)
        except StorageError as exc:
            log.error("%r is stored but its metadata record could not be (%s); the next sync computes it",
                      upload.name, exc)
            return None

    def _undo_records(self, records: dict[str, StoredRecord], stored: list[StoredObject], keep: set[str]) -> None:
        """Remove the records this failed request wrote, except those of files that stay
        in the bucket: ``keep`` (not undone, or not known to be) and files found there."""
        found_there = {remote.name for remote in stored if not remote.created}
        for name, written in records.items():
            if name not in keep and name not in found_there:
                self._records.undo(written)

    def _undo_failed_publish(
        self, stored: list[StoredObject], intent: Optional[Intent], overwrite: bool, unknown: list[str],
    ) -> list[str]:
        """Undo what a failed publish created; return the names that stayed changed.
        Under an intent, only once this request has claimed it back: else a retry has
        adopted the files (they must stay) or a clean-up has them (it deletes them)."""
        if overwrite:
            return [r.name for r in stored if r.created]  # a replaced file can't be put back
        if intent is None:
            return self._undo(stored)
        try:
            claimed = self._pending.claim(intent, ClaimReason.UNDONE, keep=[r.name for r in stored if r.created] + unknown)
        except StorageError as claim_failure:
            log.error("could not claim the intent of a failed upload (%s): its files %s stay until it expires",
                      claim_failure, [r.name for r in stored if r.created])
            return [r.name for r in stored if r.created]
        if claimed is None:
            # Claimed by a clean-up (it still exists), or gone with a file of ours gone too
            # (a clean-up done): no 200 can cover our files (a retry adopts only an
            # unclaimed intent, and whole sets), and what we wrote after the clean-up
            # looked would stay alone: undo it. Gone with every file there: adopted.
            if self.driver.stat(intent.name) is not None or any(self.driver.stat(r.name) is None for r in stored):
                return self._undo(stored)
            log.warning("not undoing %s: the upload was taken over (a retry, or a clean-up)",
                        [r.name for r in stored])
            return [r.name for r in stored if r.created]
        stayed = self._undo(stored)
        if unknown or stayed:
            # The claimed intent stays, naming that file: once it expires, a sync removes
            # it if it landed (it carries the intent's token), so no half release stays.
            return stayed
        try:
            self._pending.drop(intent, claimed)
        except StorageError as drop_failure:
            log.warning("could not delete the intent of a failed upload (%s); a sync removes it once it expires",
                        drop_failure)
        return stayed

    def _check_still_stored(self, stored: list[StoredObject]) -> None:
        """Raise StorageError unless every file is still in the bucket at the version
        this request stored or found (its intent was taken over while it ran)."""
        for remote in stored:
            there = self.driver.stat(remote.name)
            if there is None or there.version != remote.version:
                raise StorageError("upload", remote.name, _TAKEN_FOR_ABANDONED)

    def _note_write_outcome(self, exc: StorageError) -> None:
        """Open the write breaker if the bucket did not answer; close it if it did."""
        if isinstance(exc, StorageUnavailable):
            self._breaker.failed(exc)
        else:
            self._breaker.answered()

    def _refuse_if_stored_otherwise(self, upload: StagedFile) -> None:
        """Raise ObjectExists if the bucket holds ``upload``'s name with other content.
        Asked before the first write, so a request of several files that would meet a
        conflict writes nothing; the create-only write still decides every race."""
        there = self.driver.stat(upload.name)
        # No sha256 there (a folder keeps no metadata; another tool wrote it): the
        # create-only write decides, comparing the bytes if it meets the object.
        if there is not None and there.sha256 is not None and there.sha256 != upload.sha256:
            raise ObjectExists("upload", upload.name, "an object of this name, with other content, is in the bucket")

    def _undo(self, stored: list[StoredObject]) -> list[str]:
        """Delete the objects this request created, each only at the version it created
        (a conditional delete: whatever replaced it since is kept); never an object it
        found already there (``created=False``: the same bytes, another request's).
        Return the names of those that stayed."""
        stayed = []
        for remote in stored:
            if not remote.created:
                continue
            try:
                self.driver.delete(remote.name, if_version=remote.version)
                log.info("undid the upload of %r: its request failed", remote.name)
            except ObjectChanged:
                log.info("not undoing the upload of %r: replaced since, by another writer", remote.name)
            except StorageError as exc:
                stayed.append(remote.name)
                log.error("could not undo the upload of %r after its request failed: %s", remote.name, exc)
        return stayed

    def retract(self, names: Sequence[str]) -> None:
        """Delete files from the bucket, then from the folder. Raises StorageError, whose
        ``changed_before_failure`` lists the files already deleted (deletes can't be undone)."""
        removed: list[str] = []
        known = self._known_state.lookup(names)
        self._breaker.check(names[0])
        try:
            for name in names:
                meter = BucketMeter(self.driver)
                self.driver.delete(name)
                removed.append(name)
                log_bucket_write(log, "delete", name, self.driver.url, meter)
                here = known.get(name)
                self._forget_record(name, None if here is None else here.sha256)
            self._breaker.answered()
        except StorageError as exc:
            self._note_write_outcome(exc)
            exc.changed_before_failure = list(removed)
            raise
        finally:
            # Only what was deleted: after a delete the bucket did not answer, the feed
            # write would wait a whole budget again (a late delete is seen at the next
            # full listing).
            for name in removed:
                self._feed.announce_quietly(ChangeKind.REMOVED, name)
            self._remove_locally(removed)

    def _forget_record(self, name: str, sha256: Optional[str]) -> None:
        """Remove a removed file's record and core metadata file. The file is gone, which is
        what the request asked: a record left behind describes no file (never served), and a
        later upload of that name replaces it, so a failure here is logged, not raised."""
        try:
            self._records.forget(name, sha256)
        except StorageError as exc:
            log.warning("%r removed, but its record could not be removed (%s); it is replaced if the "
                        "name is uploaded again", name, exc)

    def _remove_locally(self, names: list[str]) -> None:
        if not names:
            return
        try:
            with self._lock.acquire(timeout=_LOCK_WAIT_AFTER_WRITE):
                for name in names:
                    self.folder.remove(name)
                    self.folder.remove_metadata(name)
                    self.state.record(name, None)
        except filelock.Timeout:
            log.warning("%s gone from the bucket but the folder lock was busy; they go on the next sync", names)
        except OSError as exc:
            log.error("%s gone from the bucket but could not be removed from %s (%s); the next sync retries",
                      names, self.folder.path, exc)
