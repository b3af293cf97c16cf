"""gcs_sync: stock pypiserver kept in a bucket (Google Cloud Storage, S3, or a folder).

Public names; the modules behind them:
    config    Settings.from_env: every setting, validated once
    drivers   FileStoreDriver and its gcs / s3 / local implementations
    plan      plan_sync: the pure three-way diff
    events    ContentChangeEvent kinds and their strategies
    client    StorageClient: gather, plan, apply, record; change-marker freshness
    logs      log lines per request and per sync: text in dev, Cloud Logging JSON in prod
    state     StateFile: the last-synced state, a snapshot plus a journal
    index     PackageIndex: each worker's in-memory view of the state
    backend   the pypiserver Backend over that index
    plugin    the Bottle plugin: pre-request sync, post-request push
    passwords PASSWORD_FILE in the bucket: a local copy for pypiserver that follows the object
    app       build_app: pypiserver's app with all of the above
"""

from gcs_sync.web.app import build_app
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.report import SyncReport
from gcs_sync.config import Settings
from gcs_sync.errors import (
    BucketNotFound,
    ConfigError,
    GcsSyncError,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StoragePermissionDenied,
    StorageUnavailable,
)
from gcs_sync.logs import configure_logging

__all__ = [
    "BucketNotFound",
    "ConfigError",
    "GcsSyncError",
    "ObjectChanged",
    "ObjectExists",
    "ObjectNotFound",
    "Settings",
    "StorageClient",
    "StorageError",
    "StoragePermissionDenied",
    "StorageUnavailable",
    "SyncReport",
    "build_app",
    "configure_logging",
]
