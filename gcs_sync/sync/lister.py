"""The periodic full listing, run by a process of its own beside the web workers.

A full listing (FULL_SYNC_INTERVAL: the bound for changes made straight in the bucket by
other tools) is a second or two of CPU at 50,000 files. In a worker's checker thread it
shares the GIL with that worker's requests, and those wait: /simple/<p>/ p99.9 went from
about 5 to 7-10 ms, with stalls of 20-90 ms, at 50,000 files (bench/scale.py). This loop
makes the listings in another process instead, on the instance's folder and lock, a little
before any worker would find one due: the listing record is shared, so the workers then
only read the change feed. If this process is gone, nothing else changes: the workers
find the listing due and list themselves, as they do without it.

    worth_a_process     whether FULL_SYNC_INTERVAL leaves room to list ahead of the workers
    seconds_until_due   when to list next (a pure function of the listings' ages)
    FullListingLoop     waits for the instance's first sync, then lists when due
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

import filelock

from gcs_sync.errors import StorageError
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.heap import release_free_memory

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

_MARGIN = 1.0  # seconds: the loop takes the lock this long before a worker's check could
_POLL_SECONDS = 0.2  # how often it looks for the instance's first sync, its parent, a stop


def worth_a_process(full_sync_interval: float, sync_interval: float) -> bool:
    """Whether a listing process can list ahead of the workers: not when FULL_SYNC_INTERVAL
    is within about two checks, where the workers list at almost every check anyway."""
    return full_sync_interval >= 2 * max(sync_interval, 1.0)


def seconds_until_due(age: Optional[float], *, since_own: Optional[float], full_sync_interval: float,
                      sync_interval: float) -> float:
    """Seconds until this loop's next listing should begin. ``age``: the instance's last
    listing's (by anyone; None: unknown, list now); ``since_own``: seconds since this
    loop's own last listing ended (None: none yet).

    A worker decides under the folder lock whether a listing is due, so this loop only has
    to hold that lock before the last listing is FULL_SYNC_INTERVAL old at a worker's
    check (one every SYNC_INTERVAL): however long its listing then takes, the workers
    find a new one when they get the lock. And it pauses SYNC_INTERVAL (at least a
    second) after each of its own, so a listing that takes most of the interval leaves
    room for the workers' checks."""
    if age is None:
        return 0.0
    start_at = max(full_sync_interval - sync_interval - _MARGIN, 0.0)
    due = start_at - age
    if since_own is not None:
        due = max(due, max(sync_interval, 1.0) - since_own)
    return max(due, 0.0)


class FullListingLoop:
    """``apart``, if given, makes each listing (``list_here``) in a process of its own and
    tells whether it succeeded (gcs_sync/web/lister.py forks one per listing): what a
    listing leaves in the heap then goes with that process."""

    def __init__(self, client: StorageClient, *, full_sync_interval: float, sync_interval: float,
                 stopping: threading.Event, parent_alive: Callable[[], bool],
                 apart: Optional[Callable[["FullListingLoop"], bool]] = None) -> None:
        self.client = client
        self.apart = apart
        self.full_sync_interval = full_sync_interval
        self.sync_interval = sync_interval
        self.stopping = stopping
        self.parent_alive = parent_alive
        self.listings = 0
        self._ended: Optional[float] = None  # when its own last listing ended (monotonic)
        self._check_pause = max(sync_interval, 1.0)  # the workers' pace (SYNC_INTERVAL=0: each second)

    def _running(self) -> bool:
        return not self.stopping.is_set() and self.parent_alive()

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds``, ending early when told to stop or the parent is gone."""
        deadline = time.monotonic() + seconds
        while self._running() and (remaining := deadline - time.monotonic()) > 0:
            self.stopping.wait(min(remaining, _POLL_SECONDS))

    def run(self) -> None:
        # The instance's first sync is the workers' (a cold start from a catalog snapshot
        # is theirs to make, and a new instance must not wait for a whole listing here).
        while self._running() and self.client.last_listing_age() is None:
            self._pause(_POLL_SECONDS)
        while self._running():
            since_own = None if self._ended is None else time.monotonic() - self._ended
            due = seconds_until_due(self.client.last_listing_age(), since_own=since_own,
                                    full_sync_interval=self.full_sync_interval, sync_interval=self.sync_interval)
            if due > 0:
                # Looked at again at least every SYNC_INTERVAL: a worker may have listed.
                self._pause(min(due, self._check_pause))
                continue
            self._list()

    def _list(self) -> None:
        listed = self.list_here() if self.apart is None else self.apart(self)
        self._ended = time.monotonic()
        self.listings += listed

    def list_here(self) -> bool:
        """One full listing, and what follows it; whether it succeeded."""
        try:
            self.client.sync()
        except (StorageError, filelock.Timeout, OSError) as exc:
            # Said at each attempt; the workers list themselves if this keeps failing. The
            # next attempt waits as after any listing of its own (seconds_until_due).
            log.warning("full listing by the listing process failed (%s); trying again in %gs",
                        exc, self._check_pause)
            return False
        # Nothing of it is kept until the next: that reads the state again (niced, half a
        # second at 50,000 files) rather than this process holding it all the while. The
        # catalog snapshot written after a listing holds the state until it is written.
        while self._running() and not self.client.wait_for_maintenance(_POLL_SECONDS):
            pass
        self.client.forget_state()
        release_free_memory()
        return True
