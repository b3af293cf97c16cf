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
import re
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional

from gcs_sync.clock import Moment, rfc3339
from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.errors import ObjectExists, StorageError
from gcs_sync.files import write_json_atomically
from gcs_sync.names import is_package_filename

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
    if name not in ("-", "~") and not is_package_filename(name):
        return None  # no entry of ours names anything but a package file
    return FeedEntry(object_name, int(match["ms"]), ChangeKind(match["kind"]), None if name == "-" else name,
                     None if match["sha"] == "-" else match["sha"])


def _position_name(ms: int) -> str:
    """A name that sorts just before every entry written at ``ms`` or later."""
    return f"{FEED_FOLDER}{max(ms, 0):013d}"


class ChangeFeed:
    """Appends entries (``announce``) and reads what is new since a position (``read``)."""

    def __init__(self, driver: FileStoreDriver, *, clock_skew: float = DEFAULT_CLOCK_SKEW,
                 retention: float = DEFAULT_RETENTION, wall_clock: Callable[[], float] = time.time,
                 newest_seen: Optional[Callable[[], int]] = None) -> None:
        self.driver = driver
        # The newest entry time this instance has read (its position): a new entry is
        # named no earlier, so a host whose clock is behind still writes after what the
        # readers have seen (their window starts just before that). Without a position (the
        # command line), the feed's newest entries are listed once, when first needed.
        self._newest_seen = newest_seen or self._newest_listed
        self._listed_newest: Optional[int] = None
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
        ms = max(int(self.wall_clock() * 1000), self._newest_seen() + 1)
        # In bytes: a folder "bucket" allows 255 bytes in a name, whatever its characters.
        shown = "-" if filename is None else filename if len(filename.encode()) <= _MAX_NAME_IN_ENTRY else "~"
        sha16 = sha256[:16] if kind is ChangeKind.ADDED and sha256 else "-"
        return f"{FEED_FOLDER}{ms:013d}-{uuid.uuid4().hex[:12]}.{kind.value}.{sha16}.{shown}"

    def _newest_listed(self) -> int:
        """The newest trusted entry time in the feed from this clock's window on (one
        listing, once per ChangeFeed): what a writer with no position names after."""
        if self._listed_newest is None:
            start = _position_name(int(self.wall_clock() * 1000) - self.window_ms)
            notes = self.driver.list_notes_after(FEED_FOLDER, start)
            self._listed_newest = max([0] + [ms for ms in (self._trusted_ms(entry, written)
                                                           for entry, written in _entries(notes)) if ms is not None])
        return self._listed_newest

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

    def start(self, previous: Optional["FeedPosition"] = None) -> "FeedPosition":
        """A position from which every later change is read: taken before a full listing,
        which covers everything before it. One listing call: from ``previous`` if this
        instance has read the feed lately, else of the whole feed (a cold start). No
        reader's clock is used: the position is the writers' newest entry time."""
        if previous is not None and not self._too_old(previous):
            read = self.read(previous)
            return dataclasses.replace(read.position, retry=frozenset())
        notes = self.driver.list_notes_after(FEED_FOLDER, FEED_FOLDER)
        newest = max([0] + [ms for ms in (self._trusted_ms(entry, written) for entry, written in _entries(notes))
                            if ms is not None])
        keep_after = _position_name(newest - self.window_ms) if newest else FEED_FOLDER
        return FeedPosition(newest, frozenset(name for name, _ in notes if name > keep_after), Moment.now())

    def _too_old(self, position: "FeedPosition") -> bool:
        """Whether entries written since ``position`` was read may have expired: it was read
        longer ago than the retention (less the window), by this boot's monotonic clock
        (unknown after a restart: too old)."""
        age = None if position.read_at is None else position.read_at.age()
        return age is None or age > self.retention - self.clock_skew - WRITE_DELAY_ALLOWANCE

    def read(self, position: "FeedPosition") -> "FeedRead":
        """The entries added since ``position``, and the position after them. One listing
        call (a page per 1,000 entries), plus one read per entry whose name was too long.
        ``FeedRead.too_old`` if entries since may have expired: list the whole bucket."""
        if self._too_old(position):
            return FeedRead((), position, too_old=True)
        start_after = _position_name(position.newest_ms - self.window_ms) if position.newest_ms else FEED_FOLDER
        notes = self.driver.list_notes_after(FEED_FOLDER, start_after)
        fresh = [(name, written) for name, written in notes if name not in position.seen]
        parsed = _entries(fresh)
        entries = [self._complete(entry) for entry, _ in parsed]
        newest = max([position.newest_ms] + [ms for ms in (self._trusted_ms(entry, written) for entry, written in parsed)
                                             if ms is not None])
        keep_after = _position_name(newest - self.window_ms) if newest else FEED_FOLDER
        seen = frozenset(name for name in (*position.seen, *(name for name, _ in fresh)) if name > keep_after)
        return FeedRead(tuple(entries), FeedPosition(newest, seen, Moment.now(), position.retry))

    def _trusted_ms(self, entry: FeedEntry, written: Optional[float]) -> Optional[int]:
        """An entry's time as far as it may move the position, checked against the store's
        own time of the entry (``written``): a writer whose clock is more than the bound
        off the store's must not move the window (an entry far ahead would push it past the
        others' entries still to come); its entry is applied all the same. None: not used."""
        if written is None:
            return entry.ms
        off = entry.ms / 1000 - written
        if abs(off) > self.clock_skew:
            log.warning("feed entry %s was named by a clock %.0fs %s the store's, more than FEED_CLOCK_SKEW (%gs): "
                        "fix that host's clock", entry.object_name, abs(off), "ahead of" if off > 0 else "behind",
                        self.clock_skew)
            return None
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
        if not isinstance(filename, str) or not is_package_filename(filename):
            log.warning("feed entry %s names no package file: listing the whole bucket", entry.object_name)
            return dataclasses.replace(entry, kind=ChangeKind.BULK, filename=None)
        return dataclasses.replace(entry, filename=filename)

    # -- expiry ----------------------------------------------------------------------

    def expire(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` entries written more than the retention before the
        newest entry, by the store's clock (no writer's or reader's clock decides); the
        number deleted. For the instance running the periodic full listing."""
        notes = self.driver.list_notes_after(FEED_FOLDER, FEED_FOLDER)
        times = [written for _, written in notes if written is not None]
        if not times:
            return 0
        cutoff = max(times) - self.retention
        old = [name for name, written in notes if written is not None and written < cutoff][:limit]
        for name in old:
            self.driver.delete(name)
        if old:
            log.info("feed: %d entries older than FEED_RETENTION (%gs) deleted", len(old), self.retention)
        return len(old)


def _entries(notes: Iterable[tuple[str, Optional[float]]]) -> list[tuple[FeedEntry, Optional[float]]]:
    entries = []
    for name, written in notes:
        entry = parse_entry(name)
        if entry is None:
            log.warning("%s in the change feed is not an entry this index wrote: ignored", name)
        else:
            entries.append((entry, written))
    return entries


@dataclasses.dataclass(frozen=True)
class FeedPosition:
    """Where a reader stands in the feed: the newest entry time seen (by the writers'
    clocks, each checked against the store's; 0: none yet), the entries seen in the
    window before it, when it last read the feed (this boot's monotonic clock: the
    retention fallback), and the files whose change failed here (tried again at each
    check until they succeed or a full listing covers them)."""

    newest_ms: int
    seen: frozenset[str]
    read_at: Optional[Moment]
    retry: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        return {"format": _FORMAT, "newest_ms": self.newest_ms, "seen": sorted(self.seen),
                "read_at": None if self.read_at is None else self.read_at.to_json(), "retry": sorted(self.retry)}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> "FeedPosition":
        """Raises KeyError, TypeError or ValueError if ``raw`` is not a position."""
        if raw.get("format") != _FORMAT:
            raise ValueError(f"feed position format {raw.get('format')!r}")
        seen, retry, read_at = raw["seen"], raw.get("retry", []), raw.get("read_at")
        if not isinstance(seen, list) or not isinstance(retry, list) \
                or not all(isinstance(name, str) for name in [*seen, *retry]):
            raise TypeError("seen, retry: lists of names")
        moment = Moment.from_json(read_at) if isinstance(read_at, dict) else None
        return cls(int(str(raw["newest_ms"])), frozenset(seen), moment, frozenset(retry))

    def with_retry(self, names: Iterable[str]) -> "FeedPosition":
        return dataclasses.replace(self, retry=frozenset(names))

    def anywhere(self) -> "FeedPosition":
        """This position, read from another instance (a catalog snapshot's): its moment
        means nothing here, so it counts as read now (the caller has checked its age)."""
        return dataclasses.replace(self, read_at=Moment.now(), retry=frozenset())


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
        """The files the new entries name, and those whose change failed before."""
        named = {entry.filename for entry in self.entries
                 if entry.filename is not None and entry.kind in (ChangeKind.ADDED, ChangeKind.REMOVED, ChangeKind.RECORD)}
        return named | self.position.retry

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

    def newest_ms(self) -> int:
        """The newest entry time this instance has read; 0 if none (or unreadable)."""
        position = self.load()
        return 0 if position is None else position.newest_ms

    def save(self, position: FeedPosition) -> bool:
        """False if it could not be written (a full disk): the next check lists again."""
        try:
            write_json_atomically(self.path, {**position.to_json(), "store": self._store_url})
            return True
        except OSError as exc:
            log.warning("could not record the feed position in %s (%s)", self.path, exc)
            return False
