"""The hand-off between a request's route and its bucket write: the ``PendingChanges``
of the request being handled, which the plugin opens before the route (``begin_changes``),
the backend fills while pypiserver's route runs (``current_changes``: pypiserver's
Backend API passes no request), and the plugin commits once the route has succeeded.
"""

from __future__ import annotations

import dataclasses

from pypiserver.bottle_wrapper import request

from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.folder import StagedFile

_ENVIRON_KEY = "gcs_sync.pending_changes"


@dataclasses.dataclass
class PendingChanges:
    """What one request's route asked to change; applied only if the route succeeded."""

    uploads: list[StagedFile] = dataclasses.field(default_factory=list)
    removals: list[str] = dataclasses.field(default_factory=list)

    def has_upload(self, name: str) -> bool:
        return any(staged.name == name for staged in self.uploads)

    def discard(self) -> None:
        for staged in self.uploads:
            staged.path.unlink(missing_ok=True)
        self.uploads.clear()
        self.removals.clear()

    def commit(self, client: StorageClient, *, overwrite: bool) -> None:
        try:
            if self.uploads:
                client.publish(self.uploads, overwrite=overwrite)
            if self.removals:
                client.retract(self.removals)
        finally:
            self.discard()


def current_changes() -> PendingChanges:
    """The pending changes of the request being handled (Bottle's request is per thread)."""
    changes = request.environ.get(_ENVIRON_KEY)
    if changes is None:
        raise RuntimeError("package writes are only possible inside a request wrapped by BucketSyncPlugin")
    return changes


def begin_changes() -> PendingChanges:
    """Open the pending changes of the request being handled (none yet)."""
    changes = PendingChanges()
    request.environ[_ENVIRON_KEY] = changes
    return changes
