"""WSGI entry point: ``gunicorn 'main:get_app()'`` locally and on App Engine."""

from __future__ import annotations

import os

from gunicorn.errors import AppImportError

from gcs_sync import ConfigError, Settings, StorageError, build_app, configure_logging


def get_app():
    # gunicorn prints the AppImportError's one line (no traceback per worker) and stops,
    # rather than respawning workers that can never boot.
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        raise AppImportError(f"gcs_sync configuration error: {exc}") from exc
    configure_logging(settings)
    try:
        return build_app(settings)
    except ConfigError as exc:
        # The start-up check (folders, PASSWORD_FILE, WELCOME: auth.startup), which build_app
        # runs first, or a PASSWORD_FILE object that is missing or unusable.
        raise AppImportError(f"gcs_sync configuration error: {exc}") from exc
    except StorageError as exc:
        # A missing bucket, refused or unreadable credentials: build_app lets an outage pass.
        raise AppImportError(f"gcs_sync cannot use the bucket: {exc}") from exc
