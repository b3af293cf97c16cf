"""pypiserver's Backend for a synced folder.

Reads are pypiserver's own (its folder listing), limited to the files the sync manages:
top-level package files, never dot-prefixed temps. Writes are staged, not applied: an
upload goes to a hidden temp file and a removal is only noted, and the request's
``PendingChanges`` (see ``plugin``) applies both once the route has succeeded and the
bucket has accepted them.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from pypiserver.backend import SimpleFileBackend, valid_packages
from pypiserver.core import PkgFile

from .folder import PackageFolder

if t.TYPE_CHECKING:
    from pypiserver.config import RunConfig

    from .plugin import PendingChanges


class SyncedFolderBackend(SimpleFileBackend):
    def __init__(
        self,
        config: "RunConfig",
        folder: PackageFolder,
        current_changes: t.Callable[[], "PendingChanges"],
    ) -> None:
        super().__init__(config)
        self.folder = folder
        self._current_changes = current_changes

    def get_all_packages(self) -> t.Iterable[PkgFile]:
        return valid_packages(self.folder.path, (Path(entry.path) for entry in self.folder.package_files()))

    def exists(self, filename: str) -> bool:
        # Only a quick local answer; the bucket's create-only write is the real arbiter.
        return self.folder.file_path(filename).is_file() or self._current_changes().has_upload(filename)

    def add_package(self, filename: str, stream: t.BinaryIO) -> None:
        self._current_changes().uploads.append(self.folder.stage(filename, stream))

    def remove_package(self, pkg: PkgFile) -> None:
        # Only top-level files are listed (package_files), so the relative name is the filename.
        self._current_changes().removals.append(pkg.relfn)
