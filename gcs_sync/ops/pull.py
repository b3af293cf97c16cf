"""``pull``: the server's own sync (``StorageClient.sync``, under the folder's lock, so a
server running on the same folder stays consistent), writing nothing to the bucket.
``status`` is a dry run of it (status.py).
"""

from __future__ import annotations

from gcs_sync.config import Settings
from gcs_sync.drivers.base import FileStoreDriver
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.events import ContentChangeEvent
from gcs_sync.sync.folder import PackageFolder

# A pull never writes to the bucket: no uploads or deletes, not even a change-feed entry.
# Files only in the folder are left alone; files changed or removed there are downloaded again.
PUSH_LOCAL_CHANGES = False


def pull_client(driver: FileStoreDriver, settings: Settings, lock_wait: float) -> StorageClient:
    """The client whose ``sync()`` is a pull into LOCAL_PACKAGE_DIRECTORY, waiting at most
    ``lock_wait`` seconds for the folder's lock (a running server holds it while it syncs)."""
    return StorageClient(
        driver,
        PackageFolder(settings.local_package_directory),
        sync_interval=settings.sync_interval,
        full_sync_interval=settings.full_sync_interval,
        lock_timeout=lock_wait,
        concurrency=settings.sync_concurrency,
        push_local_changes=PUSH_LOCAL_CHANGES,
        may_write=False,
        # PACKAGE_FILES cache or redirect: a pull brings the catalog, not the files.
        catalog=settings.package_files != "mirror",
    )


def download_size(event: ContentChangeEvent) -> int:
    """The bytes ``event`` downloads: RemoteAdded and RemoteChanged carry the object."""
    remote = getattr(event, "remote", None)
    return 0 if remote is None else remote.size
