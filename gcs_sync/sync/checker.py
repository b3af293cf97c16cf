"""The checker: one background thread per worker that checks the bucket every
SYNC_INTERVAL (or when a read finds the view old), the warm-up that starts it, and the
count of finished checks that tools and tests wait on."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from gcs_sync.sync.view import ViewRecord

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know

# The checker's shortest pause, so SYNC_INTERVAL=0 does not spin.
_MIN_CHECKER_PAUSE = 1.0


class Checker:
    def __init__(self, view: ViewRecord, refresh_now: Callable[[], None], store_url: str,
                 stopping: threading.Event) -> None:
        self._view = view
        # One check in the calling thread (``FreshnessGate.refresh_now``), which counts
        # itself through ``count_check``.
        self._refresh_now = refresh_now
        self._store_url = store_url
        self._stopping = stopping
        # The checker thread (``start_warm_up``), what wakes it, and a one-off check for
        # an app run without it; checks finished so far, for those who wait for one.
        self._checker: Optional[threading.Thread] = None
        self._one_check: Optional[threading.Thread] = None
        self._check_wanted = False
        self._checker_lock = threading.Lock()
        self._wake = threading.Event()
        self._checks_done = threading.Condition()
        self._checks_completed = 0

    def start_warm_up(self, then: Callable[[], None] = lambda: None) -> threading.Thread:
        """Start this worker's checker thread (once): a first check at once, then ``then``
        (build the worker's index), so that a new instance is ready before (or soon after)
        its first request; then a check whenever the view is SYNC_INTERVAL old or a read
        wakes it. Requests meanwhile serve what is there."""
        with self._checker_lock:
            if self._checker is None or not self._checker.is_alive():
                self._checker = threading.Thread(
                    target=self._run_checker, args=(then,), name="gcs-sync-checker", daemon=True,
                )
                self._checker.start()
            return self._checker

    def _run_checker(self, then: Callable[[], None]) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                self._refresh_now()
                if first:
                    then()
                    first = False
            except Exception:  # a bug: logged here, since no request would see it; back off
                self._view.failed_at = time.monotonic()
                log.exception("background check of %s failed unexpectedly", self._store_url)
            failed_at = self._view.failed_at
            if failed_at is not None:
                # After a failure, nothing before the back-off ends: not even a read's wake.
                self._stopping.wait(max(failed_at + self._view.sync_interval - time.monotonic(), 0))
            # Until the view is SYNC_INTERVAL old (a sibling's check counts), or a read
            # finds it old and wakes us; at most once a second by itself (SYNC_INTERVAL=0
            # means "check at every read", not "spin").
            age = self._view.view_age()
            due = self._view.sync_interval - age if age is not None else self._view.sync_interval
            self._wake.wait(timeout=max(due, _MIN_CHECKER_PAUSE))
            self._wake.clear()

    def wake(self) -> None:
        """A read found the view old: have a check run in the background. Without a
        checker thread (the app used outside gunicorn's hooks), a thread of its own runs
        checks while reads keep asking for them."""
        checker = self._checker
        if checker is not None and checker.is_alive():
            self._wake.set()
            return
        with self._checker_lock:
            self._check_wanted = True
            if self._one_check is None:
                self._one_check = threading.Thread(target=self._run_wanted_checks, name="gcs-sync-check", daemon=True)
                self._one_check.start()

    def _run_wanted_checks(self) -> None:
        while True:
            with self._checker_lock:  # decided under the lock that wake takes: no wish is lost
                if not self._check_wanted or self._stopping.is_set():
                    self._one_check = None
                    return
                self._check_wanted = False
            try:
                self._refresh_now()
            except Exception:  # a bug: logged here, since no request would see it
                log.exception("background check of %s failed unexpectedly", self._store_url)

    def stop(self) -> None:
        """End the checker (``stopping`` is already set): wake it from its pause."""
        self._wake.set()

    def count_check(self) -> None:
        """A check ended (whatever its outcome): wake those who wait for one."""
        with self._checks_done:
            self._checks_completed += 1
            self._checks_done.notify_all()

    @property
    def checks_completed(self) -> int:
        """How many checks this process has finished, including those that found no
        need to look (for tools and tests that wait for one)."""
        return self._checks_completed

    def wait_for_checks(self, more_than: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until ``checks_completed`` exceeds ``more_than``."""
        with self._checks_done:
            return self._checks_done.wait_for(lambda: self._checks_completed > more_than, timeout)

    def wait_until_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this instance's first sync (this worker's
        checker, or a sibling's if that one holds the lock); True once it is done."""
        deadline = time.monotonic() + timeout
        while self._view.last_listing() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._checks_done:  # woken by this worker's checks; a sibling's, by polling
                self._checks_done.wait(min(0.2, remaining))
        return True
