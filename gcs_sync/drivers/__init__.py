"""Storage drivers: one interface (``base``), one small module per backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from gcs_sync.drivers.base import FileStoreDriver, RemoteObject

if TYPE_CHECKING:
    from gcs_sync.config import Settings

__all__ = ["FileStoreDriver", "RemoteObject", "make_driver"]


def make_driver(
    settings: "Settings", *, bucket_name: Optional[str] = None, prefix: Optional[str] = None
) -> FileStoreDriver:
    """The driver the settings name: the package folder, or with ``bucket_name`` and
    ``prefix`` another folder in the same store (the htpasswd object's). SDKs are imported
    only when their backend is used."""
    bucket_name = settings.bucket_name if bucket_name is None else bucket_name
    prefix = settings.remote_package_directory if prefix is None else prefix
    if settings.storage_backend == "gcs":
        from gcs_sync.drivers.gcs import GCSDriver

        return GCSDriver(bucket_name, prefix, settings.storage_timeout,
                         signing_account=settings.signing_service_account)
    if settings.storage_backend == "s3":
        from gcs_sync.drivers.s3 import S3Driver

        return S3Driver(bucket_name, prefix, settings.storage_timeout)
    from gcs_sync.drivers.local import LocalFolderDriver

    return LocalFolderDriver(Path(bucket_name), prefix, create=settings.create_bucket_folder)
