"""A circuit breaker for a request's bucket writes, shared by the workers of an instance.

Without it, every upload or removal during a bucket outage waits the whole storage
budget (``STORAGE_TIMEOUT``, with the SDK's retries) before its 503. After a write has
failed as unavailable, the breaker is open: further writes fail at once, with the same
503 and the first failure's reason, without calling the bucket. Once a short while has
passed, the next write is let through as the probe (half-open; the others keep
failing at once meanwhile): if the bucket answers it, whatever the answer, the breaker
closes; if it fails as unavailable again, the breaker opens again. See ``WriteBreaker``
for the bounds.

The record is a small file in the folder's bookkeeping directory, ``breaker.json``, so
every worker of the instance (they share the folder) sees it. Times in it are moments of
the machine's boot clock (``clock.py``), shared by every process, so a wall-clock step
never opens or closes it; the boot id tells a record written before a reboot, whose
times mean nothing now.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from gcs_sync import clock
from gcs_sync.errors import StorageUnavailable, WritesSuspended
from gcs_sync.files import write_json_atomically

log = logging.getLogger("gcs_sync.breaker")  # the name operators' log queries know


class WriteBreaker:
    """``storage_timeout`` is STORAGE_TIMEOUT. Writes are refused without a try for half
    of it after a failure (the time one attempt may take: a client's retry sooner would
    most likely meet the same outage), so a client sees a recovered bucket within that
    plus one write, and a bucket still down costs one write's budget per probe and
    instance, not one per request. While a probe is under way (at most 1.5 times the
    budget), the other writes keep failing at once."""

    def __init__(self, control_folder: Path, storage_timeout: float) -> None:
        self.path = control_folder / "breaker.json"
        self.open_seconds = storage_timeout / 2
        self.probe_seconds = storage_timeout * 1.5
        self._boot = clock.boot_id()

    def check(self, name: str) -> None:
        """Raise WritesSuspended while writes are refused; else let this write through
        (as the probe, if a write failed before)."""
        record = self._read()
        if record is None:
            return
        now = clock.now()
        since = now - float(record["failed_at"])
        if now < float(record["until"]):
            raise WritesSuspended(
                "upload", name,
                f"the bucket failed {since:.1f}s ago ({record['error']}); writes are refused without a try "
                f"until it answers again (the next try in {float(record['until']) - now:.1f}s at most)",
            )
        # Half-open: this write probes; the others meanwhile keep failing at once.
        self._write(str(record["error"]), float(record["failed_at"]), now + self.probe_seconds)
        log.info("bucket writes: probing with %r, %.1fs after the last failure", name, since)

    def failed(self, exc: StorageUnavailable) -> None:
        if isinstance(exc, WritesSuspended):
            return
        now = clock.now()
        self._write(f"{exc.operation} {exc.object_name!r}: {exc.cause}", now, now + self.open_seconds)
        log.warning("bucket writes: refused without a try for %.1fs after %s", self.open_seconds, exc)

    def answered(self) -> None:
        """The bucket answered a write (a success or a definite refusal): close."""
        if self.path.exists():
            self.path.unlink(missing_ok=True)
            log.info("bucket writes: the bucket answers again")

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable write breaker record %s: %s", self.path, exc)
            return None
        if not isinstance(record, dict) or record.get("boot_id") != self._boot or not all(
            isinstance(record.get(key), (int, float)) for key in ("failed_at", "until")
        ):
            return None  # from before a reboot (its monotonic times mean nothing now), or foreign
        return record

    def _write(self, error: str, failed_at: float, until: float) -> None:
        try:
            write_json_atomically(self.path, {"boot_id": self._boot, "failed_at": failed_at, "until": until,
                                              "error": error})
        except OSError as exc:
            log.warning("could not record the write breaker in %s: %s", self.path, exc)
