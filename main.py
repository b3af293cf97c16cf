"""WSGI entry point: ``gunicorn 'main:get_app()'`` locally and on App Engine."""

from __future__ import annotations

import os
import sys

from gcs_sync import ConfigError, Settings, build_app, configure_logging


def get_app():
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        # One line naming the variable, rather than a traceback per worker.
        sys.exit(f"gcs_sync configuration error: {exc}")
    configure_logging(settings)
    return build_app(settings)
