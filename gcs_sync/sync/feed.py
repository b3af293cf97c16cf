"""The change feed: how instances learn what changed in the bucket without listing it.

Every change made through the index (an upload, a removal, a yank, a change of users, a
``push``) adds one new object under the prefix's ``.gcs_sync/feed/``; nothing is rewritten
in place, so no single object takes every write (GCS allows about one write per second
to one object name). An entry's name says everything a reader needs, so a check costs one
listing call and no read per entry:

    .gcs_sync/feed/<ms>-<random>.<kind>.<sha16>.<filename>

    ms        the writer's clock, milliseconds since the epoch, 13 digits: names sort by it
    random    12 hex digits: two writers at the same millisecond never collide
    kind      a: a file added or replaced, d: a file removed, r: a file's record changed
              (yank, unyank, backfill), u: the users changed, b: many changes (list all)
    sha16     the first 16 hex digits of the new bytes' sha256 (kind a), else "-"
    filename  the package file; "-" for u and b; "~" for a name too long for one path
              component, which the entry's JSON body then carries (one read)

A reader keeps a position: the newest entry time it has seen and the entries it has
seen since that time minus a window (FEED_CLOCK_SKEW plus a write's longest delay). It
lists from the start of that window (GCS ``start_offset``, S3 ``StartAfter``), so an
entry named by a writer whose clock is behind the others' by up to FEED_CLOCK_SKEW, or
written slowly, is still listed, and one already seen is skipped. Entries are never
ordered by their names: a reader re-reads the truth (the file, its record) of each name
an entry mentions, so two writers' entries in any order end in the bucket's state.

Entries expire after FEED_RETENTION (the instance running the periodic full listing
deletes them); a reader that has not read the feed for longer than that (less the window)
lists the whole bucket instead.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional

from gcs_sync.clock import rfc3339
from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.errors import ObjectExists, StorageError
from gcs_sync.files import write_json_atomically

log = logging.getLogger("gcs_sync.feed")  # the name operators' log queries know

FEED_FOLDER = ".gcs_sync/feed/"
_FORMAT = 1
DEFAULT_CLOCK_SKEW = 300.0  # FEED_CLOCK_SKEW: how far apart two writers' clocks may be
DEFAULT_RETENTION = 86400.0  # FEED_RETENTION: how long an entry is kept
# A change of more files than this (a `push`) is one "list everything" entry.
MAX_ENTRIES_PER_CHANGE = 100
# A writer names its entry, then writes it; a write that took longer than this (retries
# included) may be listed after a reader has moved past its name: the window allows it.
WRITE_DELAY_ALLOWANCE = 60.0
# One path component on a local folder "bucket" (255 bytes), less the entry's own fields.
_MAX_NAME_IN_ENTRY = 255 - len("0000000000000-000000000000.a.0123456789abcdef.")
_ENTRY = re.compile(r"(?P<ms>\d{13})-(?P<rand>[0-9a-f]{12})\.(?P<kind>[adrub])\.(?P<sha>[0-9a-f]{16}|-)\.(?P<name>.+)")


class ChangeKind(enum.StrEnum):
    ADDED = "a"
    REMOVED = "d"
    RECORD = "r"
    USERS = "u"
    BULK = "b"


@dataclasses.dataclass(frozen=True)
class FeedEntry:
    object_name: str  # under the prefix: FEED_FOLDER + ...
    ms: int
    kind: ChangeKind
    filename: Optional[str]  # None for users and bulk entries
    sha16: Optional[str]  # kind a: the first 16 hex digits of the new bytes' sha256

    @property
    def body_needed(self) -> bool:
        """The name was too long to carry: the entry's body says it."""
        return self.filename == "~"


def parse_entry(object_name: str) -> Optional[FeedEntry]:
    """The entry ``object_name`` names; None if it is not one (another tool's object)."""
    match = _ENTRY.fullmatch(object_name[len(FEED_FOLDER):]) if object_name.startswith(FEED_FOLDER) else None
    if match is None:
        return None
    name = match["name"]
    return FeedEntry(object_name, int(match["ms"]), ChangeKind(match["kind"]), None if name == "-" else name,
                     None if match["sha"] == "-" else match["sha"])


def _position_name(ms: int) -> str:
    """A name that sorts just before every entry written at ``ms`` or later."""
    return f"{FEED_FOLDER}{max(ms, 0):013d}"


class ChangeFeed:
    """Appends entries (``announce``) and reads what is new since a position (``read``)."""

    def __init__(self, driver: FileStoreDriver, *, clock_skew: float = DEFAULT_CLOCK_SKEW,
                 retention: float = DEFAULT_RETENTION, wall_clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.clock_skew = clock_skew
        self.retention = retention
        # The clock entries are named by: injectable, so tests can skew one writer.
        self.wall_clock = wall_clock
        self.window_ms = int((clock_skew + WRITE_DELAY_ALLOWANCE) * 1000)

    # -- writing ---------------------------------------------------------------------

    def announce(self, kind: ChangeKind, filename: Optional[str] = None, sha256: Optional[str] = None) -> None:
        """Add one entry; raises StorageError (the caller says what that leaves: other
        instances then see the change at their next full listing)."""
        body = json.dumps({"format": _FORMAT, "kind": kind.value, "filename": filename, "sha256": sha256,
                           "at": rfc3339(self.wall_clock())}).encode()
        for _ in range(3):  # a collision of 48 random bits at the same millisecond: try again
            name = self._entry_name(kind, filename, sha256)
            try:
                self.driver.put_note(name, body, create_only=True)
                return
            except ObjectExists:
                continue
        raise StorageError("upload", FEED_FOLDER, "could not name a new feed entry (three collisions)")

    def _entry_name(self, kind: ChangeKind, filename: Optional[str], sha256: Optional[str]) -> str:
        ms = int(self.wall_clock() * 1000)
        shown = "-" if filename is None else filename if len(filename) <= _MAX_NAME_IN_ENTRY else "~"
        sha16 = sha256[:16] if kind is ChangeKind.ADDED and sha256 else "-"
        return f"{FEED_FOLDER}{ms:013d}-{uuid.uuid4().hex[:12]}.{kind.value}.{sha16}.{shown}"

    def announce_files(self, kind: ChangeKind, files: Iterable[tuple[str, Optional[str]]]) -> None:
        """One entry per (filename, sha256), or one bulk entry for more than
        MAX_ENTRIES_PER_CHANGE files (instances then list the bucket once). Raises StorageError."""
        files = list(files)
        if len(files) > MAX_ENTRIES_PER_CHANGE:
            self.announce(ChangeKind.BULK)
            return
        for filename, sha256 in files:
            self.announce(kind, filename, sha256)

    def announce_quietly(self, kind: ChangeKind, filename: Optional[str] = None, sha256: Optional[str] = None) -> bool:
        """``announce``, logging a failure instead of raising: for a change already made
        (and acknowledged), which stands whatever the feed says. False if it failed."""
        try:
            self.announce(kind, filename, sha256)
            return True
        except StorageError as exc:
            log.error("could not add the change of %s to the bucket's change feed (%s): other instances see it at "
                      "their next full listing (FULL_SYNC_INTERVAL)", filename or kind.name.lower(), exc)
            return False

    # -- reading ---------------------------------------------------------------------

    def start(self) -> "FeedPosition":
        """A position from which every later change is read: taken before a full listing,
        which covers everything before it. One listing call."""
        now_ms = int(self.wall_clock() * 1000)
        names = self.driver.list_note_names_after(FEED_FOLDER, _position_name(now_ms - self.window_ms))
        newest = max([now_ms] + [self._trusted_ms(entry, now_ms) for entry in _entries(names)])
        return FeedPosition(newest, frozenset(names), self.wall_clock())

    def read(self, position: "FeedPosition") -> "FeedRead":
        """The entries added since ``position``, and the position after them. One listing
        call (a page per 1,000 entries), plus one read per entry whose name was too long.
        ``FeedRead.too_old`` if entries since may have expired: list the whole bucket."""
        now = self.wall_clock()
        if now - position.read_at > self.retention - self.clock_skew - WRITE_DELAY_ALLOWANCE:
            return FeedRead((), position, too_old=True)
        start_after = _position_name(position.newest_ms - self.window_ms)
        names = self.driver.list_note_names_after(FEED_FOLDER, start_after)
        fresh = [name for name in names if name not in position.seen]
        entries = [self._complete(entry) for entry in _entries(fresh)]
        now_ms = int(now * 1000)
        newest = max([position.newest_ms] + [self._trusted_ms(entry, now_ms) for entry in entries])
        keep_after = _position_name(newest - self.window_ms)
        seen = frozenset(name for name in (*position.seen, *fresh) if name > keep_after)
        return FeedRead(tuple(entries), FeedPosition(newest, seen, now))

    def _trusted_ms(self, entry: FeedEntry, now_ms: int) -> int:
        """An entry's time as far as it may move the position: a writer whose clock is
        ahead of ours by more than the bound must not push the window past entries still
        to come from the others (its entry is applied all the same)."""
        limit = now_ms + int(self.clock_skew * 1000)
        if entry.ms > limit:
            log.warning("feed entry %s is %.0fs ahead of this instance's clock, more than FEED_CLOCK_SKEW (%gs): "
                        "check the writers' clocks", entry.object_name, (entry.ms - now_ms) / 1000, self.clock_skew)
            return limit
        return entry.ms

    def _complete(self, entry: FeedEntry) -> FeedEntry:
        """An entry whose filename did not fit its name, with the filename from its body."""
        if not entry.body_needed:
            return entry
        try:
            body = self.driver.read_note(entry.object_name)
            filename = json.loads(body)["filename"] if body is not None else None
        except (StorageError, ValueError, KeyError, TypeError) as exc:
            log.warning("feed entry %s could not be read (%s): listing the whole bucket", entry.object_name, exc)
            return dataclasses.replace(entry, kind=ChangeKind.BULK, filename=None)
        if not isinstance(filename, str):
            return dataclasses.replace(entry, kind=ChangeKind.BULK, filename=None)
        return dataclasses.replace(entry, filename=filename)

    # -- expiry ----------------------------------------------------------------------

    def expire(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` entries older than the retention (by this clock); the
        number deleted. For the instance running the periodic full listing."""
        cutoff = _position_name(int((self.wall_clock() - self.retention) * 1000))
        names = [name for name in self.driver.list_note_names_after(FEED_FOLDER, FEED_FOLDER) if name < cutoff]
        for name in names[:limit]:
            self.driver.delete(name)
        if names:
            log.info("feed: %d entries older than FEED_RETENTION (%gs) deleted", min(len(names), limit), self.retention)
        return min(len(names), limit)


def _entries(names: Iterable[str]) -> list[FeedEntry]:
    entries = []
    for name in names:
        entry = parse_entry(name)
        if entry is None:
            log.warning("%s in the change feed is not an entry this index wrote: ignored", name)
        else:
            entries.append(entry)
    return entries


@dataclasses.dataclass(frozen=True)
class FeedPosition:
    """Where a reader stands in the feed: the newest entry time seen (capped at its own
    clock plus the skew bound), the entries seen in the window before it, and when it last
    read the feed (its own clock: the retention fallback)."""

    newest_ms: int
    seen: frozenset[str]
    read_at: float

    def to_json(self) -> dict[str, object]:
        return {"format": _FORMAT, "newest_ms": self.newest_ms, "seen": sorted(self.seen), "read_at": self.read_at}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> "FeedPosition":
        """Raises KeyError, TypeError or ValueError if ``raw`` is not a position."""
        if raw.get("format") != _FORMAT:
            raise ValueError(f"feed position format {raw.get('format')!r}")
        seen = raw["seen"]
        if not isinstance(seen, list) or not all(isinstance(name, str) for name in seen):
            raise TypeError("seen: a list of entry names")
        return cls(int(str(raw["newest_ms"])), frozenset(seen), float(str(raw["read_at"])))


@dataclasses.dataclass(frozen=True)
class FeedRead:
    entries: tuple[FeedEntry, ...]
    position: FeedPosition
    too_old: bool = False

    @property
    def needs_listing(self) -> bool:
        """Whether only a full listing can tell what changed."""
        return self.too_old or any(entry.kind is ChangeKind.BULK for entry in self.entries)

    def filenames(self) -> set[str]:
        return {entry.filename for entry in self.entries
                if entry.filename is not None and entry.kind in (ChangeKind.ADDED, ChangeKind.REMOVED, ChangeKind.RECORD)}

    @property
    def users_changed(self) -> bool:
        return any(entry.kind is ChangeKind.USERS for entry in self.entries)


class PositionFile:
    """This instance's feed position, shared by its workers (written under the folder
    lock, replaced atomically). A missing or unreadable one means "list the bucket"."""

    def __init__(self, control_folder: Path, store_url: str) -> None:
        self.path = control_folder / "feed-position.json"
        self._store_url = store_url

    def load(self) -> Optional[FeedPosition]:
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("store") != self._store_url:
                return None
            return FeedPosition.from_json(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("feed position %s unreadable (%s): the next check lists the bucket", self.path, exc)
            return None

    def save(self, position: FeedPosition) -> bool:
        """False if it could not be written (a full disk): the next check lists again."""
        try:
            write_json_atomically(self.path, {**position.to_json(), "store": self._store_url})
            return True
        except OSError as exc:
            log.warning("could not record the feed position in %s (%s)", self.path, exc)
            return False

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
