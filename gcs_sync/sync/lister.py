"""The periodic full listing, run by a process of its own beside the web workers.

A full listing (FULL_SYNC_INTERVAL: the bound for changes made straight in the bucket by
other tools) is a second or two of CPU at 50,000 files. In a worker's checker thread it
shares the GIL with that worker's requests, and those wait: /simple/<p>/ p99.9 went from
about 5 to 7-10 ms, with stalls of 20-90 ms, at 50,000 files (bench/scale.py). This loop
makes the listings in another process instead, on the instance's folder and lock, a little
before any worker would find one due: the listing record is shared, so the workers then
only read the change feed. If this process is gone, nothing else changes: the workers
find the listing due and list themselves, as they do without it.

    seconds_until_due   when to list next (a pure function of the last listing's age)
    FullListingLoop     waits for the instance's first sync, then lists when due
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import filelock

from gcs_sync.errors import StorageError
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.heap import release_free_memory

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

# Between two listings of this loop, at least this share of FULL_SYNC_INTERVAL (and a
# second): with intervals too short to list ahead of the workers, they list too, and
# this loop does not run back to back.
_MIN_SHARE = 0.5
_POLL_SECONDS = 0.2
_MAINTENANCE_WAIT = 600.0  # the catalog snapshot after a listing holds the state until written  # how often it looks for the instance's first sync, and for its parent


def seconds_until_due(age: Optional[float], *, full_sync_interval: float, sync_interval: float,
                      last_seconds: float) -> float:
    """Seconds until this loop's next listing should begin: early enough that it ends
    (taking about as long as the last, with half again as margin) before a worker's check,
    made every SYNC_INTERVAL, finds the listing FULL_SYNC_INTERVAL old. ``age`` is the last
    listing's age by anyone (None: unknown, list now)."""
    if age is None:
        return 0.0
    lead = sync_interval + 1.5 * last_seconds + 1.0
    start_at = max(full_sync_interval - lead, _MIN_SHARE * full_sync_interval, 1.0)
    return max(start_at - age, 0.0)


class FullListingLoop:
    def __init__(self, client: StorageClient, *, full_sync_interval: float, sync_interval: float,
                 stopping: threading.Event, parent_alive: Callable[[], bool]) -> None:
        self.client = client
        self.full_sync_interval = full_sync_interval
        self.sync_interval = sync_interval
        self.stopping = stopping
        self.parent_alive = parent_alive
        self.last_seconds = 0.0
        self.listings = 0

    def _running(self) -> bool:
        return not self.stopping.is_set() and self.parent_alive()

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds``, ending early when told to stop or the parent is gone."""
        remaining = seconds
        while remaining > 0 and self._running():
            step = min(remaining, _POLL_SECONDS)
            self.stopping.wait(step)
            remaining -= step

    def run(self) -> None:
        # The instance's first sync is the workers' (a cold start from a catalog snapshot
        # is theirs to make, and a new instance must not wait for a whole listing here).
        while self._running() and self.client.last_listing_age() is None:
            self._pause(_POLL_SECONDS)
        while self._running():
            due = seconds_until_due(self.client.last_listing_age(), full_sync_interval=self.full_sync_interval,
                                    sync_interval=self.sync_interval, last_seconds=self.last_seconds)
            if due > 0:
                # Looked at again at least every SYNC_INTERVAL: a worker may have listed.
                self._pause(min(due, max(self.sync_interval, 1.0)))
                continue
            self._list()

    def _list(self) -> None:
        try:
            report = self.client.sync()
        except (StorageError, filelock.Timeout) as exc:
            # The workers list themselves if this keeps failing; said once per attempt.
            log.warning("full listing by the listing process failed (%s); trying again in %gs",
                        exc, self.sync_interval)
            self._pause(max(self.sync_interval, 1.0))
            return
        self.last_seconds = report.seconds
        self.listings += 1
        # Nothing of it is kept until the next: that reads the state again (niced, half a
        # second at 50,000 files) rather than this process holding it all the while.
        self.client.wait_for_maintenance(_MAINTENANCE_WAIT)
        self.client.forget_state()
        release_free_memory()
