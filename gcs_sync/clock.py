"""Elapsed time that no step of the wall clock can change.

Freshness, back-offs and "is this old enough" questions compare moments, never wall-clock
times: a clock stepped back (an NTP correction, a VM migration) would otherwise stop the
checks for the length of the step, and one stepped forward would make everything look old.

CLOCK_BOOTTIME (Linux; elsewhere ``time.monotonic``) is one clock for every process of a
machine since it booted, counting time suspended too (a paused VM must not make a view look
younger than it is), so the workers of an instance can share a moment through a file in
their folder. The boot id tells a moment recorded before a reboot (a folder on a persistent disk)
from one of this boot: such a moment has no age, and whatever depends on it is redone.
Wall-clock times are still written next to moments, for people to read, never to decide.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import time
import uuid
from pathlib import Path
from typing import Any, Optional

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def now() -> float:
    """Seconds on this machine's boot clock: never stepped, suspend included."""
    return time.clock_gettime(_CLOCK) if _CLOCK is not None else time.monotonic()


@functools.lru_cache(maxsize=None)
def boot_id() -> str:
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        # Not Linux: moments are then only comparable within this process, which makes
        # every process do its own checks (correct, just less shared).
        return f"process-{uuid.uuid4().hex}"


@dataclasses.dataclass(frozen=True)
class Moment:
    """A point on this machine's monotonic clock, in this boot."""

    monotonic: float
    boot: str

    @classmethod
    def now(cls) -> "Moment":
        return cls(now(), boot_id())

    def age(self) -> Optional[float]:
        """Seconds since this moment; None if it belongs to another boot (or process, off
        Linux) or lies ahead, which no moment of this boot can."""
        if self.boot != boot_id():
            return None
        elapsed = now() - self.monotonic
        return elapsed if elapsed >= 0 else None

    def to_json(self) -> dict[str, Any]:
        return {"monotonic": self.monotonic, "boot": self.boot}

    @classmethod
    def from_json(cls, raw: Any) -> Optional["Moment"]:
        """The moment in ``raw``; None if it is not one (an older format, a damaged file)."""
        if not isinstance(raw, dict):
            return None
        monotonic, boot = raw.get("monotonic"), raw.get("boot")
        if not isinstance(monotonic, (int, float)) or isinstance(monotonic, bool) or not isinstance(boot, str):
            return None
        return cls(float(monotonic), boot)


def rfc3339(epoch_seconds: float, timespec: str = "milliseconds") -> str:
    """A wall-clock time (seconds since the epoch) as RFC 3339 in UTC, for people and logs."""
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.timezone.utc).isoformat(timespec=timespec)
