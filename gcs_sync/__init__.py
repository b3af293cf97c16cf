"""gcs_sync: stock pypiserver kept in a bucket (Google Cloud Storage, S3, or a folder).

Public names; the modules behind them:
    config              Settings.from_env: every setting, validated once
    drivers             FileStoreDriver and its gcs / s3 / local implementations
    sync.plan           plan_sync: the pure three-way diff
    sync.events         ContentChangeEvent kinds and their strategies
    sync.client         StorageClient: the facade over the engine (sync.engine: gather,
                        plan, apply, record), the freshness gate and checker, readiness,
                        the change feed and a request's own writes
    sync.state          StateFile: the last-synced state, a snapshot plus a journal
    sync.report         SyncReport and the sync's log lines
    logs                logging setup: text in dev, Cloud Logging JSON in prod
    web.index           PackageIndex: each worker's in-memory view of the state
    web.backend         the pypiserver Backend over that index
    web.plugin          the Bottle plugin: pre-request sync, post-request push
    auth.password_file  PASSWORD_FILE in the bucket: a local copy that follows the object
    web.app             build_app: pypiserver's app with all of the above
"""

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
from gcs_sync.sync.client import StorageClient
from gcs_sync.sync.report import SyncReport
from gcs_sync.web.app import build_app

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
