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
  clock (so neither the writer's clock nor a clock step matters), belongs to a request
  that died: gunicorn kills a request after 30 s. If every file it names is there, the
  upload is complete and only the intent is deleted; else each file still carrying the
  intent's upload token is deleted (at that version only), then the intent.
- An upload that finds one of these files already there, byte for byte (a retry after
  the crash), adopts it: it deletes the dead request's intent before its own 200, so no
  later clean-up deletes a file a 200 covered.

The local-folder driver keeps no metadata: there a file counts as the intent's if its
sha256 is the one the intent names (dev only).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Mapping, Optional, Sequence

from .drivers.base import FileStoreDriver, RemoteObject
from .errors import ObjectChanged, StorageError
from .folder import StagedFile
from .state import SyncedFile

log = logging.getLogger(__name__)

PENDING_FOLDER = ".gcs_sync/pending/"
# Well beyond gunicorn's 30 s worker timeout (which bounds a request) and a late write's
# STORAGE_TIMEOUT after it: an intent this old, as one observer saw it, is a dead request's.
DEFAULT_EXPIRY = 120.0
_TOKEN_SEPARATOR = "."


@dataclasses.dataclass(frozen=True)
class Intent:
    id: str
    files: dict[str, dict[str, Optional[str]]]  # name -> {"token": ..., "sha256": ...}

    @property
    def name(self) -> str:
        return f"{PENDING_FOLDER}{self.id}.json"

    def token(self, name: str) -> str:
        return str(self.files[name]["token"])


def _intent_id_of(token: Optional[str]) -> Optional[str]:
    """The intent a file's upload token belongs to (None: a write without one)."""
    if not token or _TOKEN_SEPARATOR not in token:
        return None
    return token.split(_TOKEN_SEPARATOR, 1)[0]


class PendingUploads:
    def __init__(self, driver: FileStoreDriver, expiry: float = DEFAULT_EXPIRY) -> None:
        self.driver = driver
        self.expiry = expiry
        self._first_seen: dict[str, float] = {}  # intent name -> monotonic time first seen
        self._contents: dict[str, Optional[Intent]] = {}  # intents never change: read once

    # -- a request's side --------------------------------------------------------------

    def begin(self, staged: Sequence[StagedFile]) -> Intent:
        """Write the intent for ``staged``; raises StorageError (nothing written yet)."""
        intent_id = uuid.uuid4().hex
        intent = Intent(intent_id, {
            upload.name: {"token": f"{intent_id}{_TOKEN_SEPARATOR}{i}", "sha256": upload.sha256}
            for i, upload in enumerate(staged)
        })
        self.driver.put_note(intent.name, json.dumps({"files": intent.files}).encode())
        return intent

    def end(self, intent: Intent) -> None:
        """Delete the intent: its files are all stored, or all undone. Raises StorageError."""
        self.driver.delete(intent.name)

    def adopt(self, found_token: Optional[str], own: Optional[Intent]) -> None:
        """This request is about to answer 200 for a file another request stored under an
        intent: delete that intent, so its clean-up never deletes the file."""
        intent_id = _intent_id_of(found_token)
        if intent_id is None or (own is not None and intent_id == own.id):
            return
        self.driver.delete(f"{PENDING_FOLDER}{intent_id}.json")
        log.info("an upload took over the files of the unfinished upload %s", intent_id)

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
        if name not in self._contents:
            data = self.driver.read_note(name)
            intent = None
            if data is not None:
                try:
                    files = json.loads(data)["files"]
                    intent = Intent(name[len(PENDING_FOLDER):].removesuffix(".json"), dict(files))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring the unreadable upload intent %r in %s: %s", name, self.driver.url, exc)
            self._contents[name] = intent
        return self._contents[name]

    def _expire(self, intent: Intent) -> None:
        found = {name: self.driver.stat(name) for name in intent.files}
        if all(obj is not None for obj in found.values()):
            log.warning("upload %s did not finish but stored all its files %s: kept", intent.id, sorted(found))
        else:
            for name, obj in found.items():
                if obj is not None and self._made_by(intent, name, obj):
                    try:
                        self.driver.delete(name, if_version=obj.version)
                    except ObjectChanged:
                        continue  # replaced since by another writer: not the intent's any more
                    log.warning("removed %r from %s: its upload %s died before storing %s", name,
                                self.driver.url, intent.id, sorted(n for n, o in found.items() if o is None))
        self.driver.delete(intent.name)
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

