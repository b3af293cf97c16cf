"""The last-synced state of one local folder: what each file's bucket version was when
local and bucket last agreed.

It is what makes deletions safe: a file missing on one side is only deleted on the other
if the state says both sides had it. A missing, unreadable or foreign state (another
bucket, another format version) is treated as empty, which never deletes anything.

Stored as a snapshot (``state.json``, written atomically: temp file, then rename) plus a
journal (``journal.jsonl``) to which each change is appended as it happens, so a worker
killed in the middle of a long sync loses at most the file it was moving, and recording
one upload costs one short append rather than rewriting the whole state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SyncedFile:
    remote_version: str
    local_fingerprint: str
    sha256: Optional[str] = None


class StateFile:
    def __init__(self, control_folder: Path, store_url: str) -> None:
        self.path = control_folder / "state.json"
        self._journal = control_folder / "journal.jsonl"
        # Touched after every successful pull: its age is how stale this instance's view is.
        self._pulled_stamp = control_folder / "pulled"
        self._store_url = store_url

    def load(self) -> dict[str, SyncedFile]:
        files = self._load_snapshot()
        if files is None:
            return {}
        for name, entry in self._journal_entries():
            if entry is None:
                files.pop(name, None)
            else:
                files[name] = entry
        return files

    def _load_snapshot(self) -> Optional[dict[str, SyncedFile]]:
        """The snapshot's files; None if the state is foreign (then the journal is too)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("state file %s is unreadable (%s); starting from an empty state", self.path, exc)
            return None
        if raw.get("format") != FORMAT_VERSION or raw.get("store") != self._store_url:
            log.warning(
                "state file %s belongs to %s (format %s), not %s; starting from an empty state",
                self.path, raw.get("store"), raw.get("format"), self._store_url,
            )
            return None
        try:
            return {name: SyncedFile(**entry) for name, entry in raw["files"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            log.error("state file %s is malformed (%s); starting from an empty state", self.path, exc)
            return None

    def _journal_entries(self) -> list[tuple[str, Optional[SyncedFile]]]:
        try:
            lines = self._journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                record = json.loads(line)
                entry = record["entry"]
                entries.append((record["name"], None if entry is None else SyncedFile(**entry)))
            except (ValueError, KeyError, TypeError) as exc:
                # A worker killed mid-append leaves a torn last line; anything else is damage.
                level = logging.DEBUG if number == len(lines) else logging.ERROR
                log.log(level, "ignoring line %d of %s: %s", number, self._journal, exc)
        return entries

    def record(self, name: str, entry: Optional[SyncedFile]) -> None:
        """Append one file's new state (None: forgotten). Callers hold the folder lock.
        Behind a foreign snapshot the entry is ignored, which is safe: an empty state
        never deletes anything, and the next sync writes a snapshot of our own."""
        line = json.dumps({"name": name, "entry": None if entry is None else dataclasses.asdict(entry)})
        with open(self._journal, "a", encoding="utf-8") as journal:
            # The leading newline ends a line torn by a worker killed mid-append, so only
            # that line is lost, not this one too; blank lines are skipped on reading.
            journal.write("\n" + line + "\n")

    def has_journal(self) -> bool:
        return self._journal.exists()

    def save(self, files: dict[str, SyncedFile]) -> None:
        """Write the whole state as a new snapshot and empty the journal."""
        payload = {
            "format": FORMAT_VERSION,
            "store": self._store_url,
            "files": {name: dataclasses.asdict(entry) for name, entry in sorted(files.items())},
        }
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            temp.write_text(json.dumps(payload, indent=0), encoding="utf-8")
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        self._journal.unlink(missing_ok=True)

    def mark_pulled(self, listed_at: float) -> None:
        """Record a successful pull, dated when its bucket listing began: a change made
        after that moment must not look older than it is."""
        self._pulled_stamp.touch()
        os.utime(self._pulled_stamp, (listed_at, listed_at))

    def pulled_age(self) -> Optional[float]:
        """Seconds since the last successful pull by any worker on this folder."""
        try:
            return time.time() - self._pulled_stamp.stat().st_mtime
        except FileNotFoundError:
            return None
