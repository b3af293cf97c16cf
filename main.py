"""WSGI entry point: ``gunicorn 'main:get_app()'`` locally and on App Engine."""

from __future__ import annotations

import os

from gunicorn.errors import AppImportError

from gcs_sync import ConfigError, Settings, StorageError, build_app, configure_logging
from gcs_sync.auth.startup import check_startup


def get_app():
    # gunicorn prints the AppImportError's one line (no traceback per worker) and stops,
    # rather than respawning workers that can never boot.
    try:
        settings = Settings.from_env(os.environ)
        started = check_startup(settings)  # what the settings name: folders, PASSWORD_FILE, WELCOME
    except ConfigError as exc:
        raise AppImportError(f"gcs_sync configuration error: {exc}") from exc
    configure_logging(settings)
    try:
        return build_app(settings, started=started)
    except ConfigError as exc:  # PASSWORD_FILE names a bucket object that is missing or unusable
        raise AppImportError(f"gcs_sync configuration error: {exc}") from exc
    except StorageError as exc:
        # A missing bucket, refused or unreadable credentials: build_app lets an outage pass.
        raise AppImportError(f"gcs_sync cannot use the bucket: {exc}") from exc
