"""Storage drivers: one interface (``base``), one small module per backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import FileStoreDriver, RemoteObject

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["FileStoreDriver", "RemoteObject", "make_driver"]


def make_driver(settings: "Settings") -> FileStoreDriver:
    """The driver the settings name. SDKs are imported only when their backend is used."""
    prefix = settings.remote_package_directory
    if settings.storage_backend == "gcs":
        from .gcs import GCSDriver

        return GCSDriver(settings.bucket_name, prefix, settings.storage_timeout)
    if settings.storage_backend == "s3":
        from .s3 import S3Driver

        return S3Driver(settings.bucket_name, prefix, settings.storage_timeout)
    from .local import LocalFolderDriver

    return LocalFolderDriver(Path(settings.bucket_name), prefix, create=settings.create_bucket_folder)
