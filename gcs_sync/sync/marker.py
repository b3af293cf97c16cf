"""The bucket's change marker, as the engine and a request's writes touch it: every
upload and removal rewrites it, so other instances list the bucket at their next check
(a metadata read of it tells them whether anything moved)."""

from __future__ import annotations

import logging

from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.errors import StorageError, StoragePermissionDenied

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know


class ChangeMarker:
    def __init__(self, driver: FileStoreDriver, *, create: bool = True) -> None:
        self.driver = driver
        # False: a sync never writes to the bucket, not even a missing change marker.
        self._write_refused = not create

    def create(self) -> None:
        """A bucket filled by other tools has no marker: write one, so later checks can
        skip the listing. It is recorded as unseen, so the next check lists once more."""
        if self._write_refused:
            return
        try:
            self.driver.touch_marker()
        except StorageError as exc:
            # Read-only credentials won't change; anything else is retried at the next sync.
            self._write_refused = isinstance(exc, StoragePermissionDenied)
            log.warning("could not create the change marker (%s); until it exists, every check "
                        "(SYNC_INTERVAL) lists the bucket", exc)

    def announce(self) -> None:
        """Rewrite the change marker so other instances list the bucket at their next check."""
        try:
            self.driver.touch_marker()
        except StorageError as exc:
            log.error("could not rewrite the change marker after a change to the bucket (%s): other instances "
                      "see that change at their next full listing (FULL_SYNC_INTERVAL)", exc)
