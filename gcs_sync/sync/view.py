"""How current this instance's view of the bucket is: what its workers share through the
folder's records (``StateFile``) and what this process keeps of its own (the moments of
its checks, the last failure and listing it could not record on a full disk).

The freshness gate, the checker thread, readiness and the engine all read and write this
one record, so they agree on the view's age, the back-off and the last listing.
"""

from __future__ import annotations

import time
from typing import Callable, Collection, Iterable, Optional, TypeVar

from gcs_sync.clock import Moment
from gcs_sync.sync.state import Listing, StateFile

_T = TypeVar("_T")

# A view this many SYNC_INTERVALs old (at least that many seconds) means the checker has
# not run: the next read checks itself (see ``FreshnessGate.ensure_fresh``).
_STALLED_INTERVALS = 3


class ViewRecord:
    def __init__(self, state: StateFile, sync_interval: float) -> None:
        self.state = state
        self.sync_interval = sync_interval
        # time.monotonic() of this process's last failed check: the back-off runs from it.
        self.failed_at: Optional[float] = None
        # This process's last check that found the folder current (see ``view_age``).
        self.checked: Optional[Moment] = None
        self.check_ended: Optional[float] = None  # time.monotonic() when it ended
        # What this process could not record for its siblings (a full disk), for its own readiness.
        self.unrecorded_failure: Optional[tuple[Moment, dict[str, object]]] = None
        self.unrecorded_unservable: Optional[tuple[Moment, dict[str, dict[str, str]]]] = None
        # The last listing as this process made it (see ``last_listing``).
        self.own_listing: Optional[Listing] = None
        # Which of some files the synced state records (the client's TrackedState.lookup).
        self.recorded: Callable[[Iterable[str]], Collection[str]] = lambda names: ()

    def is_fresh(self) -> bool:
        """Whether a worker of this instance found the folder current within SYNC_INTERVAL."""
        age = self.view_age()
        return age is not None and age < self.sync_interval

    def view_age(self) -> Optional[float]:
        """Seconds since a worker of this instance last found the folder current: the
        shared record, or this process's own moment if that is newer (or the record could
        not be written: a full disk)."""
        shared = self.state.pulled_age()
        own = None if self.checked is None else self.checked.age()
        known = [age for age in (shared, own) if age is not None]
        return min(known) if known else None

    def mark_checked(self, began: Moment) -> None:
        self.checked = began
        self.check_ended = time.monotonic()
        self.state.mark_pulled(began)

    def checks_stalled(self) -> bool:
        """Whether no worker of this instance has even tried a check for far longer than
        the checker would wait: the process was frozen between requests (Cloud Run and App
        Engine may throttle the CPU of an idle instance), or the folder was just restored.
        A failed attempt counts as one (a bucket outage is not a stall: reads must not
        take turns waiting on a bucket that does not answer)."""
        own_failure = None if self.failed_at is None else time.monotonic() - self.failed_at
        own_end = None if self.check_ended is None else time.monotonic() - self.check_ended
        # Since a check ended, not since it began: a slow listing is not a stall.
        ages = [age for age in (self.state.check_idle_age(), own_end, self.state.failure_age(), own_failure)
                if age is not None]
        return not ages or min(ages) > self.stall_seconds()

    def stall_seconds(self) -> float:
        return _STALLED_INTERVALS * max(self.sync_interval, 1.0)

    def last_listing(self) -> Optional[Listing]:
        """The last full listing: the shared record, or this process's own if that could
        not be written (a full disk) and is newer."""
        shared, own = self.state.last_listing(), self.own_listing
        if own is None:
            return shared
        if shared is None:
            return own
        shared_age, own_age = shared.age(), own.age()
        return own if shared_age is None or (own_age is not None and own_age < shared_age) else shared

    def unservable_not_fetched(self) -> Optional[dict[str, dict[str, str]]]:
        """The files this process could not fetch and could not record (a full disk),
        until a complete listing has begun since (only a listing that fetched everything
        makes them all servable), less those the state now records as here (a sibling's
        check fetched them, named by the change feed). A sibling's check that found nothing
        new, or a listing that failed as well, does not clear them."""
        if self.unrecorded_unservable is None:
            return None
        moment, files = self.unrecorded_unservable
        listing = self.last_listing()
        since, listed = moment.age(), None if listing is None or not listing.complete else listing.age()
        if since is not None and listed is not None and listed < since:
            return None
        fetched = self.recorded(files)
        left = {name: why for name, why in files.items() if name not in fetched}
        return left or None

    def not_superseded(self, unrecorded: Optional[tuple[Moment, _T]]) -> Optional[_T]:
        """What this process could not record for its siblings (``unrecorded_*``, with
        when), unless a sibling has found the folder current since: then it no longer holds."""
        if unrecorded is None:
            return None
        moment, payload = unrecorded
        since, checked = moment.age(), self.state.pulled_age()
        if since is not None and checked is not None and checked < since:
            return None
        return payload
