"""Which files in the local folder have stopped changing, so that a sync may push them
(PUSH_LOCAL_CHANGES): a file copied into the folder while a sync runs must not be
pushed half-written.

A file is settled once its fingerprint (inode, size, mtime) has stayed the same for
``SETTLE_SECONDS`` as this process saw it, on ``time.monotonic`` (a wall-clock step
changes nothing), or, when this process has not seen it change, once its mtime is that
old (a file that was already there at start-up is pushed by the first sync). A file
this process saw change is settled only after ``SETTLE_SECONDS`` of no change, whatever
its mtime says (``cp -p`` sets an old mtime only at the end).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

from gcs_sync.files import fingerprint_mtime

# Longer than a copy's pauses between writes (a local copy writes continuously; a slow
# network copy stalls for a second or two), short next to SYNC_INTERVAL: a file copied
# in is pushed by the first sync after it has been still this long.
SETTLE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class _Seen:
    fingerprint: str
    since: float  # monotonic: when this process first saw this fingerprint
    changed: bool  # this process saw the file with another fingerprint before


class SettleWatch:
    def __init__(self, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.settle_seconds = settle_seconds
        self._seen: dict[str, _Seen] = {}

    def unsettled(self, candidates: Mapping[str, str]) -> set[str]:
        """Of ``candidates`` (name -> fingerprint: the files a sync might push), those
        still changing, or changed too recently. Forgets files no longer offered."""
        now, wall = time.monotonic(), time.time()
        seen: dict[str, _Seen] = {}
        unsettled = set()
        for name, current in candidates.items():
            before = self._seen.get(name)
            if before is not None and before.fingerprint == current:
                entry = before
            else:
                entry = _Seen(current, now, changed=before is not None)
            seen[name] = entry
            still_for = now - entry.since
            old_enough = not entry.changed and wall - fingerprint_mtime(current) >= self.settle_seconds
            if still_for < self.settle_seconds and not old_enough:
                unsettled.add(name)
        self._seen = seen
        return unsettled
