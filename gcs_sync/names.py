"""Which file names the index manages, on disk and in the bucket.

The bucket is shared with other tools, so its object names are untrusted input: a name is
only synced if it is a plain package filename that pypiserver itself would accept for an
upload. Anything else (``..``, separators, control characters, dot files, folder
placeholders, README.txt) is skipped, never written to disk.
"""

from __future__ import annotations

import re

from pypiserver.pkg_helpers import guess_pkgname_and_version

# pypiserver's own upload rule (pypiserver._app.is_valid_pkg_filename, issue #102), but
# matched in full: its ``$`` also matches before a trailing newline, so pypiserver takes
# "demo-1.0.tar.gz\n" for a package (a bucket object can be named so; an upload can't).
_PACKAGE_FILENAME = re.compile(r"[a-z0-9_.!+-]+", re.I)
MAX_NAME_LENGTH = 255  # one path component on every common filesystem


def is_package_filename(name: str) -> bool:
    """True for a name that is safe as one file in the package folder and is a package."""
    return is_safe_filename(name) and guess_pkgname_and_version(name) is not None


def is_safe_filename(name: str) -> bool:
    """True for a name that is safe as one file in the package folder (no separator, no
    dot file, pypiserver's characters only): the cheap half of ``is_package_filename``."""
    return 0 < len(name) <= MAX_NAME_LENGTH and not name.startswith(".") \
        and _PACKAGE_FILENAME.fullmatch(name) is not None
