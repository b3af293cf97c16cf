"""The last-synced state of one local folder: what each file's bucket version was when
local and bucket last agreed. Versioned and written atomically (temp file, then rename).

It is what makes deletions safe: a file missing on one side is only deleted on the other
if the state says both sides had it. A missing, unreadable or foreign state (another
bucket, another format version) is treated as empty, which never deletes anything.
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
        # Touched after every successful pull: its age is how stale this instance's view is.
        self._pulled_stamp = control_folder / "pulled"
        self._store_url = store_url

    def load(self) -> dict[str, SyncedFile]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("state file %s is unreadable (%s); starting from an empty state", self.path, exc)
            return {}
        if raw.get("format") != FORMAT_VERSION or raw.get("store") != self._store_url:
            log.warning(
                "state file %s belongs to %s (format %s), not %s; starting from an empty state",
                self.path, raw.get("store"), raw.get("format"), self._store_url,
            )
            return {}
        try:
            return {name: SyncedFile(**entry) for name, entry in raw["files"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            log.error("state file %s is malformed (%s); starting from an empty state", self.path, exc)
            return {}

    def save(self, files: dict[str, SyncedFile]) -> None:
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
