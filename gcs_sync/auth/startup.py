"""The start-up check: what the settings name on this machine, checked before anything starts.

``Settings.from_env`` reads and validates the variables without touching a file; this
check, run at every start (``main.get_app``, and ``web.app.build_app`` when its caller has
not; gunicorn.conf.py's ``on_starting`` in the master; the command line's settings),
looks at what they name:

- BUCKET_NAME of the local backend: an existing folder (the dev default is created on
  first use instead);
- LOCAL_PACKAGE_DIRECTORY: a folder this process can write to, or can create;
- PASSWORD_FILE: a bucket object's URL well formed (the object is read later, by
  ``password_file.BucketPasswordFile.load``), or a local htpasswd file with usable users;
- WELCOME: a page pypiserver can render, read here once and handed to the app.

It sits in ``auth``, the lowest layer that can check the htpasswd file, so that the web
app and the command line can both run it. Every problem is a ConfigError naming the
variable, with the same message the settings gave when they checked these themselves.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from pypiserver.bottle_wrapper import template
from pypiserver.config import html_file_arg

from gcs_sync.auth.htpasswd import check_htpasswd
from gcs_sync.auth.password_object import password_object
from gcs_sync.config import Settings
from gcs_sync.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Started:
    """What the check read, for the app (``build_app(..., started=...)``)."""

    welcome_msg: str  # the page at "/": the WELCOME file's text, or pypiserver's own


def check_startup(settings: Settings) -> Started:
    """What the app needs read from the files ``settings`` name; ConfigError naming the
    variable if one of them is not usable here."""
    if settings.storage_backend == "local" and not settings.create_bucket_folder:
        if not Path(settings.bucket_name).is_dir():
            raise ConfigError("BUCKET_NAME", f"local bucket folder {settings.bucket_name} does not exist")
    _check_writable_folder("LOCAL_PACKAGE_DIRECTORY", settings.local_package_directory)
    password_file = settings.password_file
    if password_file is not None and password_file != "." and password_object(settings) is None:
        check_htpasswd(password_file)  # an object is read and checked later, by build_app
    return Started(welcome_msg=_welcome_page(settings.welcome))


def _check_writable_folder(variable: str, folder: Path) -> None:
    """The folder, or the nearest part of its path that exists, must be a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(variable, f"{folder} is not a folder this process can write to ({existing})")


def _welcome_page(value: Optional[str]) -> str:
    """pypiserver's --welcome: the file's text, rendered once here with the variables
    pypiserver gives it, so that a template that cannot render stops the start instead
    of making every request for "/" a 500. Without WELCOME, pypiserver's own page."""
    if value is None:
        return html_file_arg(None)
    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _welcome_error(f"cannot read the welcome page {path}: {exc}", value) from exc
    try:
        template(text + "\n", URL="http://host/", VERSION="0", NUMPKGS=0,
                 PACKAGES="/packages/", SIMPLE="/simple/")
    except Exception as exc:  # a user's template can fail in any way when it runs: named here
        raise _welcome_error(f"the welcome page {path} is not a template pypiserver can render: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())}", value) from exc
    return text


def _welcome_error(problem: str, value: str) -> ConfigError:
    # Worded as the settings word a value their parser refuses: the problem, then the value.
    return ConfigError("WELCOME", f"{problem} (got {value!r})")
