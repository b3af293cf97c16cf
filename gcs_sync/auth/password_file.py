"""PASSWORD_FILE in the bucket: the htpasswd object, the local copy pypiserver reads, and
how that copy follows the object.

Logins are checked against a local htpasswd file, which the check re-reads whenever the
file is replaced or its mtime changes (htpasswd.HtpasswdChecker, at every login).
So the object (``gs://BUCKET/config/htpasswd``, ``s3://BUCKET/config/htpasswd``) is copied
to ``LOCAL_PACKAGE_DIRECTORY/.gcs_sync/htpasswd`` at start-up, and each new version of it
replaces that copy atomically. The bucket stays the source of truth.

When a new version is looked for, so that bucket calls stay O(changes), not O(requests):

- after every listing of the bucket by the package sync (a change-feed entry says the
  users changed, which ``users add|remove`` writes, or the periodic FULL_SYNC_INTERVAL listing, which
  catches an object rewritten by another tool): one metadata read, and a download only
  if the version is not the copy's;
- at every check (SYNC_INTERVAL) while the copy is not current: the last look failed,
  or the copy is gone.

A version that is not a usable htpasswd file is never installed: the users of the last
good copy stay, the error is logged and recorded for ``/ready``, and that version is not
downloaded again. The copy's version is recorded next to it, so the workers of an
instance (which share the folder) download each version once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Optional

from gcs_sync.auth.htpasswd import check_htpasswd
from gcs_sync.auth.password_object import BucketObject, password_object
from gcs_sync.config import Settings
from gcs_sync.drivers import FileStoreDriver, RemoteObject, make_driver
from gcs_sync.errors import ConfigError, ObjectChanged, StorageError, StorageUnavailable
from gcs_sync.files import fingerprint, replacing, write_json_atomically
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.sync.state import StateFile

log = logging.getLogger("gcs_sync.passwords")  # the name operators' log queries know

COPY_NAME = "htpasswd"
_RECORD_NAME = "htpasswd.json"
FAILURE_KIND = "passwords"  # its entry in the state's failure records (state.FAILURE_KINDS)
# A version replaced between its metadata read and its download: look again, this often.
_ATTEMPTS = 3
# passlib compares mtimes as float seconds: a replacement must differ by more than their
# rounding (a fraction of a microsecond) to be re-read.
_MIN_MTIME_STEP_NS = 1_000_000


@dataclasses.dataclass(frozen=True)
class _CopyRecord:
    """Which object and version the local copy holds, and the newest version refused.

    ``copy`` is the fingerprint of the copy file written with that version: workers
    install without a common lock (a start-up's ``load`` takes none), so one can put its
    copy in place after another's and write its record before it. The record is trusted
    only for the file it describes; any other file is read again from the bucket."""

    url: Optional[str] = None
    version: Optional[str] = None
    rejected: Optional[str] = None
    problem: Optional[str] = None
    copy: Optional[str] = None


class BucketPasswordFile:
    """The htpasswd object and its local copy, for one instance's package folder."""

    def __init__(self, location: BucketObject, driver: FileStoreDriver, control: Path, state: StateFile) -> None:
        self.location = location
        self.url = str(location)
        self.driver = driver  # for the object's own folder: its name is ``location.name``
        self.path = control / COPY_NAME
        self._record_path = control / _RECORD_NAME
        self._state = state

    @classmethod
    def for_settings(cls, settings: Settings, folder: PackageFolder, store_url: str) -> Optional["BucketPasswordFile"]:
        """The object PASSWORD_FILE names, or None if it names a local file (or nothing)."""
        location = password_object(settings)
        if location is None:
            return None
        driver = make_driver(settings, bucket_name=location.bucket, prefix=location.folder)
        return cls(location, driver, folder.control, StateFile(folder.control, store_url))

    # -- at start-up -----------------------------------------------------------------

    def load(self) -> Path:
        """Bring the local copy to the object's current version; return its path.

        A missing object or one that is not a usable htpasswd file stops the start
        (ConfigError naming the object), and so does a refusal to read it
        (StorageError) - unless this folder already holds a good copy of that object (a
        worker restarted by gunicorn): it then serves those users, as its running
        siblings do, and the problem shows in ``/ready``. A bucket that does not answer
        stops nothing: the start goes on with the copy there is, or with no users
        (nobody can log in yet), and every check retries."""
        try:
            if self._update():
                # A sibling may have installed a newer version before this worker's rename
                # landed (no lock here): one more look puts the current one in place.
                self._update()
        except StorageUnavailable as exc:
            if not self.path.is_file():
                self._install_bytes(b"")  # pypiserver needs a file; no user matches
            self._report(exc)
        except ConfigError as exc:
            if not self._has_good_copy():
                raise
            self._report(exc)
        except StorageError as exc:
            if not self._has_good_copy():  # the same error, naming the whole URL (bucket included)
                raise type(exc)(exc.operation, self.url, exc.cause) from exc
            self._report(exc)
        else:
            self._state.clear_failure(FAILURE_KIND)
        return self.path

    # -- at every check of the bucket (StorageClient's ``after_check``) ----------------

    def after_check(self, listed: bool) -> None:
        """Called under the folder lock after each check: look for a new version if the
        check listed the bucket, or if the copy is not current. Never raises for a bad
        or unreachable object: the users of the last good copy stay."""
        if not listed and self._state.failure(FAILURE_KIND) is None and self._holds(self._read_record()):
            return  # the steady state: no bucket call (a stat and a small read)
        try:
            self._update()
        except (ConfigError, StorageError, OSError) as exc:
            self._report(exc)
        else:
            self._state.clear_failure(FAILURE_KIND)

    # -- the work --------------------------------------------------------------------

    def _update(self) -> bool:
        """Make the copy the object's current version; whether it downloaded one. Raises
        ConfigError if the object is missing or unusable, StorageError if it cannot be read."""
        for _ in range(_ATTEMPTS):
            remote = self.driver.stat(self.location.name)
            if remote is None:
                raise ConfigError("PASSWORD_FILE", f"no such object: {self.url} (create it with "
                                  "'python -m gcs_sync users add NAME')")
            record = self._read_record()
            if remote.version == record.version and self._holds(record):
                return False
            if remote.version == record.rejected and record.problem:
                raise ConfigError("PASSWORD_FILE", record.problem)  # known bad: not downloaded again
            try:
                self._install(remote, record)
                return True
            except ObjectChanged:
                continue  # replaced since its metadata was read: read it again
        raise ObjectChanged("download", self.url, f"replaced {_ATTEMPTS} times while it was being read")

    def _install(self, remote: RemoteObject, record: _CopyRecord) -> None:
        with replacing(self.path) as temp:
            temp.touch(mode=0o600)  # hashes: readable by this user only (the download keeps the mode)
            self.driver.download(remote.name, temp, remote.version)
            try:
                check_htpasswd(str(temp), shown_as=self.url)  # the same checks as a local file
            except ConfigError as exc:
                refused = dataclasses.replace(record, url=self.url, rejected=remote.version, problem=exc.problem)
                self._write_record(refused)
                raise
            step_mtime(temp, self.path)
            copy = fingerprint(temp.stat())  # a rename keeps it: the copy's, once in place
        self._write_record(_CopyRecord(self.url, remote.version, copy=copy))
        log.info("users from %s (version %s) in %s", self.url, remote.version, self.path)

    def _install_bytes(self, data: bytes) -> None:
        with replacing(self.path) as temp:
            temp.touch(mode=0o600)
            temp.write_bytes(data)
            step_mtime(temp, self.path)

    def _has_good_copy(self) -> bool:
        record = self._read_record()
        return record.url == self.url and record.version is not None and self.path.is_file()

    def _holds(self, record: _CopyRecord) -> bool:
        """Whether the copy in place is the file ``record`` was written with."""
        try:
            return record.copy is not None and fingerprint(self.path.stat()) == record.copy
        except FileNotFoundError:
            return False

    def _report(self, exc: Exception) -> None:
        problem = exc.problem if isinstance(exc, ConfigError) else f"cannot read {self.url}: {exc}"
        message = f"PASSWORD_FILE: {problem}"
        known = self._state.failure(FAILURE_KIND)
        if known is None or known.get("error") != message:  # once per problem, not per check
            log.error("%s; %s", message, "keeping the users of the last good copy" if self._has_good_copy()
                      else "nobody can log in until it is readable")
            self._state.record_failure(message, kind=FAILURE_KIND)

    def _read_record(self) -> _CopyRecord:
        try:
            raw = json.loads(self._record_path.read_text(encoding="utf-8"))
            record = _CopyRecord(**raw)
        except FileNotFoundError:
            return _CopyRecord()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring %s (%s): the htpasswd object is read again", self._record_path, exc)
            return _CopyRecord()
        return record if record.url == self.url else _CopyRecord()  # another PASSWORD_FILE's copy

    def _write_record(self, record: _CopyRecord) -> None:
        write_json_atomically(self._record_path, dataclasses.asdict(record))


def step_mtime(temp: Path, target: Path) -> None:
    """Give ``temp``, about to replace ``target``, an mtime that differs from the old
    file's: pypiserver re-reads an htpasswd file only when its mtime changes, and two
    versions written within the same instant (or on a file system with coarse
    timestamps) could share one."""
    try:
        old = target.stat().st_mtime_ns
    except FileNotFoundError:
        return
    if abs(temp.stat().st_mtime_ns - old) < _MIN_MTIME_STEP_NS:
        stamp = old + _MIN_MTIME_STEP_NS
        os.utime(temp, ns=(stamp, stamp))
