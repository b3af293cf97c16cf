"""Intents of multi-file uploads: a request killed between its bucket writes (a wheel
stored, its ``.asc`` not) must never leave half a release that looks whole.

Before the first write of a request of several files (create-only), a small intent object,
``PREFIX/.gcs_sync/pending/ID.json`` (outside the one-level listing of packages), names
the files and the upload token each write will carry. It is deleted once every file is
stored, before the 200. So a live intent means "these files may be half there":

- A sync that lists new objects also lists the intents, and hides the files a live
  intent names that this folder has not synced yet (they are not downloaded or served);
  the listing counts as incomplete, so the next check looks again.
- An intent seen for longer than ``expiry`` seconds, on this process's own monotonic
  clock (so neither the writer's clock nor a clock step matters), is taken for a dead
  request's. Its clean-up first *claims* it (rewrites it as claimed, only over the
  version it read), then deletes each file still carrying the intent's upload token (at
  that version only), then the intent.
- One rule makes the hand-offs safe, between the writer, a retry and a clean-up, even
  when the writer is only slow (gunicorn's threaded workers do not kill a slow request):
  whoever deletes files an intent names must first claim the intent; whoever keeps them
  (the writer before its 200, a retry that found them byte for byte and "adopts" them)
  deletes the intent only at its unclaimed version. So a 200 is given only if no
  clean-up has claimed the files, and a clean-up deletes nothing a 200 covers. A writer
  that finds its intent claimed or gone answers 503 unless every file is still there.

The local-folder driver keeps no metadata: there a file counts as the intent's if its
sha256 is the one the intent names (dev only).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import time
import uuid
from typing import Mapping, Optional, Sequence

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject, Version
from gcs_sync.errors import ObjectChanged, StorageError
from gcs_sync.sync.feed import ChangeFeed, ChangeKind
from gcs_sync.sync.folder import StagedFile
from gcs_sync.sync.state import SyncedFile

log = logging.getLogger("gcs_sync.pending")  # the name operators' log queries know

PENDING_FOLDER = ".gcs_sync/pending/"
# A request writes for at most half of this (``check_time``), and a write lasts about
# STORAGE_TIMEOUT: an intent this old, as one observer saw it, is a dead request's.
DEFAULT_EXPIRY = 120.0
_TOKEN_SEPARATOR = "."


@dataclasses.dataclass(frozen=True)
class Intent:
    id: str
    files: dict[str, dict[str, Optional[str]]]  # name -> {"token": ..., "sha256": ...}
    version: Optional[Version] = None  # as its writer wrote it (unclaimed)

    @property
    def name(self) -> str:
        return f"{PENDING_FOLDER}{self.id}.json"

    def token(self, name: str) -> str:
        return str(self.files[name]["token"])


class ClaimReason(enum.StrEnum):
    """Why an intent was claimed: its ``claimed`` field in the bucket."""

    UNDONE = "undone"  # by its writer, before undoing a failed upload
    EXPIRED = "expired"  # by a sync's clean-up, once the intent expired


def _intent_id_of(token: Optional[str]) -> Optional[str]:
    """The intent a file's upload token belongs to (None: a write without one)."""
    if not token or _TOKEN_SEPARATOR not in token:
        return None
    return token.split(_TOKEN_SEPARATOR, 1)[0]


class PendingUploads:
    def __init__(self, driver: FileStoreDriver, expiry: float = DEFAULT_EXPIRY,
                 feed: Optional[ChangeFeed] = None) -> None:
        self.driver = driver
        self.expiry = expiry
        # Where a clean-up says what it deleted or let through (instances that read only the
        # feed would otherwise keep serving, or never serve, those files until a full listing).
        self._feed = feed
        self._first_seen: dict[str, float] = {}  # intent name -> monotonic time first seen
        # Read once, for hiding: a claim may later narrow an intent's list (a stale, wider
        # list only hides a little more); _expire reads it again before acting.
        self._contents: dict[str, Optional[Intent]] = {}
        # This process's own intents: when each began (``check_time``). Removed as they end.
        self._begun: dict[str, float] = {}

    # -- a request's side --------------------------------------------------------------

    def begin(self, staged: Sequence[StagedFile]) -> Intent:
        """Write the intent for ``staged``; raises StorageError (nothing written yet)."""
        intent_id = uuid.uuid4().hex
        files: dict[str, dict[str, Optional[str]]] = {
            upload.name: {"token": f"{intent_id}{_TOKEN_SEPARATOR}{i}", "sha256": upload.sha256}
            for i, upload in enumerate(staged)
        }
        name = Intent(intent_id, files).name
        version = self.driver.put_note(name, json.dumps({"files": files}).encode())
        self._begun[intent_id] = time.monotonic()
        return Intent(intent_id, files, version)

    def check_time(self, intent: Intent, name: str) -> None:
        """Before each write under ``intent``: raise StorageError once the request has
        used half the expiry, so that its writes are over long before any clean-up may
        take it for a dead one (threaded workers do not kill a slow request)."""
        if time.monotonic() - self._begun.get(intent.id, time.monotonic()) > self.expiry / 2:
            raise StorageError("upload", name, f"the upload took over {self.expiry / 2:.0f}s "
                               "(half of PENDING_UPLOAD_EXPIRY); nothing more is written. Try again")

    def finish(self, intent: Intent) -> bool:
        """The writer's hand-off before its 200: delete its intent at the version it wrote.
        True if done: the files are the writer's to keep. False if the intent is not
        unclaimed any more: claimed by a clean-up (its files may be going) or gone
        (adopted by a retry, or cleaned up): the caller checks its files before any 200.
        Raises StorageError."""
        self._begun.pop(intent.id, None)
        found = self.driver.stat(intent.name)
        if found is None or found.version != intent.version:
            return False
        try:
            # Gone in between can only mean adopted (a clean-up claims before it deletes).
            self.driver.delete(intent.name, if_version=intent.version)
        except ObjectChanged:
            return False
        return True

    def claim(self, intent: Intent, why: ClaimReason, keep: Sequence[str] = ()) -> Optional[Version]:
        """Claim the writer's own intent before it undoes its files: then no retry can
        adopt them meanwhile. It names only ``keep`` from then on (files whose write may
        still land: what a clean-up removes once it expires, and all it hides meanwhile).
        The claimed version, or None if the intent is not the writer's any more (adopted
        or claimed: its files are not the writer's to delete)."""
        self._begun.pop(intent.id, None)
        files = {name: intent.files[name] for name in keep}
        try:
            return self.driver.put_note(intent.name, _claimed(files, why), if_version=intent.version)
        except ObjectChanged:
            return None

    def drop(self, intent: Intent, claimed_version: Version) -> None:
        """Delete an intent its writer claimed and cleaned up after. Raises StorageError."""
        self.driver.delete(intent.name, if_version=claimed_version)

    def adopt(self, found: RemoteObject, own: Optional[Intent]) -> None:
        """This request is about to answer 200 for ``found``, a file another request
        stored (the very same bytes): take it over from that request's intent, if any,
        so that no clean-up deletes a file a 200 covers. Raises StorageError if a clean-up
        has claimed it (the file may be going: the client should try again)."""
        for name in self._intents_naming(found, own):
            there = self.driver.stat(name)
            if there is None:
                continue  # ended, or cleaned up and the file kept: nothing holds it
            data = self.driver.read_note(name)
            claimed = data is not None and _parse(data)[1] is not None
            try:
                if claimed:
                    raise ObjectChanged("adopt", name, "claimed by a clean-up")
                self.driver.delete(name, if_version=there.version)
            except ObjectChanged as exc:
                raise StorageError(
                    "upload", found.name, "an unfinished earlier upload of this file is being removed; "
                    "try again in a minute",
                ) from exc
            log.info("an upload took over %r from the unfinished upload %s", found.name, name)

    def _intents_naming(self, found: RemoteObject, own: Optional[Intent]) -> list[str]:
        intent_id = _intent_id_of(found.upload_token)
        if intent_id is not None:
            return [] if own is not None and intent_id == own.id else [f"{PENDING_FOLDER}{intent_id}.json"]
        if self.driver.keeps_metadata:
            return []  # written without an intent (a single-file upload, another tool)
        # A folder keeps no tokens: any intent naming this file with these bytes (dev only).
        names = []
        for name in self.driver.list_notes(PENDING_FOLDER):
            intent = self._read(name)
            if (intent is not None and (own is None or intent.id != own.id)
                    and intent.files.get(found.name, {}).get("sha256") == found.sha256):
                names.append(name)
        return names

    # -- a sync's side -----------------------------------------------------------------

    def hide(self, remote: Mapping[str, RemoteObject], synced: Mapping[str, SyncedFile]) -> set[str]:
        """The names in ``remote`` to leave alone this time: named by a live intent and not
        synced here yet. Expires the intents seen for longer than ``expiry`` first.
        Raises StorageError (the sync fails, as for a failed listing)."""
        new = {name for name, obj in remote.items()
               if name not in synced or synced[name].remote_version != obj.version}
        if not new:
            return set()  # nothing a live intent could hide: no call at all
        now = time.monotonic()
        listed = set(self.driver.list_notes(PENDING_FOLDER))
        self._first_seen = {name: self._first_seen.get(name, now) for name in listed}
        self._contents = {name: intent for name, intent in self._contents.items() if name in listed}
        hidden: set[str] = set()
        for name in sorted(listed):
            intent = self._read(name)
            if intent is None:
                continue
            if now - self._first_seen[name] >= self.expiry:
                try:
                    self._expire(intent)
                    continue
                except StorageError as exc:  # its files stay hidden; the next sync tries again
                    log.error("could not clean up the unfinished upload %s in %s: %s", intent.id, self.driver.url, exc)
            hidden |= {file for file in intent.files if file in new}
        return hidden

    def _read(self, name: str) -> Optional[Intent]:
        """The files an intent names, as first read (see ``_contents``)."""
        if name not in self._contents:
            data = self.driver.read_note(name)
            intent = None
            if data is not None:
                try:
                    intent = Intent(name[len(PENDING_FOLDER):].removesuffix(".json"), _parse(data)[0])
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("ignoring the unreadable upload intent %r in %s: %s", name, self.driver.url, exc)
            self._contents[name] = intent
        return self._contents[name]

    def _expire(self, intent: Intent) -> None:
        there = self.driver.stat(intent.name)
        if there is None:
            return  # ended meanwhile
        # Read again (after the stat: a claim below succeeds only if this is still that
        # version): its writer may have claimed it and narrowed what it names.
        data = self.driver.read_note(intent.name)
        if data is None:
            return
        try:
            files, claimed_by = _parse(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the unreadable upload intent %r in %s: %s", intent.name, self.driver.url, exc)
            return
        intent = Intent(intent.id, files)
        try:
            # Claimed first: from here on no writer gives a 200 and no retry adopts them.
            claimed_version = self.driver.put_note(intent.name, _claimed(intent.files, ClaimReason.EXPIRED),
                                                   if_version=there.version)
        except ObjectChanged:
            return  # its writer ended it, a retry adopted it, or another clean-up has it
        found = {name: self.driver.stat(name) for name in intent.files}
        if claimed_by is None and all(obj is not None for obj in found.values()):
            # Unclaimed and whole: the writer died after its last write. (A claimed one
            # names what its writer gave up on: never kept, even if all of it is there.)
            log.warning("upload %s did not finish but stored all its files %s: kept", intent.id, sorted(found))
            announced = [(name, ChangeKind.ADDED, obj.sha256) for name, obj in found.items() if obj is not None]
        else:
            announced = []
            for name, obj in found.items():
                if obj is not None and self._made_by(intent, name, obj):
                    try:
                        self.driver.delete(name, if_version=obj.version)
                    except ObjectChanged:
                        continue  # replaced since by another writer: not the intent's any more
                    log.warning("removed %r from %s: its upload %s did not finish (stored: %s)", name,
                                self.driver.url, intent.id, sorted(n for n, o in found.items() if o is not None))
                    announced.append((name, ChangeKind.REMOVED, None))
        self.driver.delete(intent.name, if_version=claimed_version)
        if self._feed is not None:  # after the intent: the files are no longer hidden
            for name, kind, sha256 in announced:
                self._feed.announce_quietly(kind, name, sha256)
        self._contents.pop(intent.name, None)
        self._first_seen.pop(intent.name, None)

    def _made_by(self, intent: Intent, name: str, obj: RemoteObject) -> bool:
        if obj.upload_token is not None:
            return obj.upload_token == intent.token(name)
        if self.driver.keeps_metadata:
            return False  # written by another tool, or another request without a token
        # A folder keeps no metadata: the same bytes are taken as the intent's (dev only).
        expected = intent.files[name].get("sha256")
        looked = self.driver.look_once(name, expected)
        return looked is not None and looked.version == obj.version and looked.sha256 == expected


def _claimed(files: Mapping[str, Mapping[str, Optional[str]]], why: ClaimReason) -> bytes:
    # A new nonce each time: on S3 the version (ETag) is the bytes' MD5, and two claims
    # of the same intent must never look like the same version.
    return json.dumps({"files": dict(files), "claimed": why.value, "nonce": uuid.uuid4().hex}).encode()


def _parse(data: bytes) -> tuple[dict[str, dict[str, Optional[str]]], Optional[str]]:
    """An intent's files, and why it was claimed (None: not claimed). Raises ValueError,
    KeyError or TypeError if it is not an intent."""
    raw = json.loads(data)
    return dict(raw["files"]), raw.get("claimed")
