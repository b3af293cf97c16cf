"""WSGI entry point: ``gunicorn 'main:get_app()'`` locally and on App Engine."""

from __future__ import annotations

import os

from gunicorn.errors import AppImportError

from gcs_sync import ConfigError, Settings, build_app, configure_logging


def get_app():
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        # gunicorn prints this one line (no traceback per worker) and stops, rather than
        # respawning workers that can never boot.
        raise AppImportError(f"gcs_sync configuration error: {exc}") from exc
    configure_logging(settings)
    return build_app(settings)
