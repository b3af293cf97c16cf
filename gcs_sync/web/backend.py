"""pypiserver's Backend for a synced folder, so routes and responses stay pypiserver's own.

Reads come from the worker's in-memory ``PackageIndex``: O(one project) per project page,
O(1) per download and existence check, digests known in advance. Writes are staged, not
applied: an upload goes to a hidden temp file and a removal is only noted, and the
request's ``PendingChanges`` (``changes``, which the plugin commits) applies both once the route has succeeded
and the bucket has accepted them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t

from pypiserver.backend import Backend, digest_file
from pypiserver.bottle_wrapper import HTTPError, request
from pypiserver.core import PkgFile

from gcs_sync.errors import failure_reason
from gcs_sync.names import MAX_NAME_LENGTH, is_package_filename
from gcs_sync.records.compute import compute_record
from gcs_sync.records.extract import DistributionError
from gcs_sync.records.record import METADATA_SUFFIX, upload_time
from gcs_sync.sync.folder import PackageFolder
from gcs_sync.web.changes import current_changes
from gcs_sync.web.index import IndexedFile, PackageIndex

log = logging.getLogger("gcs_sync.backend")  # the name operators' log queries know

if t.TYPE_CHECKING:
    from pypiserver.config import RunConfig


class SyncedFolderBackend(Backend):
    def __init__(
        self,
        config: "RunConfig",
        folder: PackageFolder,
        index: PackageIndex,
        refresh_now: t.Callable[[], None],
    ) -> None:
        super().__init__(config)
        self.folder = folder
        self.index = index
        self._refresh_now = refresh_now
        self._said_not_held = False

    def _current(self) -> PackageIndex:
        self.index.refresh()
        return self.index

    def get_all_packages(self) -> t.Iterable[PkgFile]:
        requested = _requested_download()
        index = self._current()
        if requested is not None and requested.endswith(METADATA_SUFFIX) and index.get(requested) is None:
            # PEP 658: GET /packages/<file>.metadata is the file's core metadata. The route
            # stays pypiserver's (its auth, its static_file, its 404): it finds the metadata
            # file here, or nothing (a file without metadata is a 404, at O(1)).
            metadata = index.metadata_file(requested)
            return [] if metadata is None else [metadata]
        return index.all_packages(first=requested)

    def find_project_packages(self, project: str) -> tuple[PkgFile, ...]:
        return self._current().project_packages(project)

    def find_version(self, name: str, version: str) -> t.Iterable[PkgFile]:
        # Only removals ask this, and writes skip the pre-request check (see plugin): a
        # file this worker has not seen yet (uploaded through another instance) gets one,
        # waited for (reads don't wait for a check; this write needs its answer).
        found = self._find_version(name, version)
        if not found:
            self._refresh_now()
            found = self._find_version(name, version)
        return found

    def _find_version(self, name: str, version: str) -> list[PkgFile]:
        # Any spelling of the project counts (PEP 503: "my-pkg" removes my_pkg-1.0.whl, as
        # /simple/my-pkg/ lists it); stock pypiserver matched the file name's spelling only.
        # project_packages already looks the name up normalised.
        return [pkg for pkg in self._current().project_packages(name) if pkg.version == version]

    def get_projects(self) -> t.Iterable[str]:
        return self._current().projects()

    def package_count(self) -> int:
        return len(self._current())

    def exists(self, filename: str) -> bool:
        # pypiserver answers 409 when this is true, before it has the file. Only a name
        # repeated within one request is refused here; the request's commit compares the
        # content with what is stored (``StorageClient.publish``): the same bytes again are
        # a success (a retry, as PyPI allows), other bytes are pypiserver's own 409.
        return current_changes().has_upload(filename)

    def digest(self, pkg: PkgFile) -> t.Optional[str]:
        # Reached only when the index has no digest for this algorithm (HASH_ALGO other
        # than sha256): computed once per file version, then kept on the PkgFile.
        if self.hash_algo is None or pkg.fn is None:
            return None
        if isinstance(pkg, IndexedFile) and not pkg.held:
            # Its bytes are in the bucket only: reading them would make a page O(bytes).
            if not self._said_not_held:
                self._said_not_held = True
                log.warning("HASH_ALGO=%s: files not held here (PACKAGE_FILES=cache or redirect, or a mirror "
                            "not filled yet) are linked with their sha256 instead (first: %s)",
                            self.hash_algo, pkg.relfn)
            return _sha256_digest(pkg)
        try:
            return digest_file(pkg.fn, self.hash_algo)
        except FileNotFoundError:
            # Removed by a sync in another worker since this worker's index listed it.
            log.info("%s: removed from the local folder as its page was made; linked with its sha256", pkg.relfn)
            return _sha256_digest(pkg) if isinstance(pkg, IndexedFile) else None

    def add_package(self, filename: str, stream: t.BinaryIO) -> None:
        # pypiserver has checked the name with its own rule, which lets through a leading
        # dot (a file nobody would ever see listed) and any length (stock pypiserver then
        # fails with a 500): refuse those as it refuses other bad names, before writing.
        if not is_package_filename(filename):
            raise HTTPError(
                400, f"Bad filename: {filename} (a package filename of at most {MAX_NAME_LENGTH} "
                "characters, not starting with '.')",
            )
        try:
            staged = self.folder.stage(filename, stream)
        except OSError as exc:
            raise local_disk_error(filename, exc) from exc
        try:
            # Before anything is stored: a file that is not what its name says is a 400.
            record, metadata = compute_record(
                staged.path, filename, sha256=staged.sha256, size=staged.size,
                upload_time=upload_time(time.time()), uploader=_uploader(),
            )
        except DistributionError as exc:
            staged.path.unlink(missing_ok=True)
            log.warning("upload of %r refused: %s", filename, exc.problem)
            raise HTTPError("400 Bad distribution", f"Bad distribution: {exc}") from exc
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        current_changes().uploads.append(dataclasses.replace(staged, record=record, metadata=metadata))

    def remove_package(self, pkg: PkgFile) -> None:
        # Only top-level files are indexed, so the relative name is the filename.
        current_changes().removals.append(pkg.relfn)


def local_disk_error(filename: str, exc: OSError) -> HTTPError:
    """The 503 for an upload this instance could not write to its own folder (a full disk
    above all): nothing was stored, and the status line says why (twine prints it)."""
    reason = failure_reason(exc)
    log.error("upload of %r refused: could not write it to the local folder: %s", filename, exc)
    return HTTPError(
        f"503 Upload not stored, {reason}: {filename}",
        f"Could not receive {filename!r}: {reason} on this server ({exc.strerror or exc}). "
        "Nothing was stored. Try again later.\n",
    )


def _uploader() -> t.Optional[str]:
    """The user the upload's credentials name (pypiserver has checked them), if any."""
    credentials = request.auth
    return None if credentials is None else credentials[0]


def _sha256_digest(pkg: IndexedFile) -> t.Optional[str]:
    """The digest the state knows, for a link whose HASH_ALGO digest cannot be made here:
    pip and uv check whichever hashlib algorithm a link names. None without one."""
    return None if pkg.sha256 is None else f"sha256={pkg.sha256}"


def _requested_download() -> t.Optional[str]:
    """The filename asked for, if this request is pypiserver's ``GET /packages/<filename>``:
    that route scans ``get_all_packages()`` for it, so it is put first."""
    try:
        route = request.environ.get("bottle.route")
    except RuntimeError:  # no request being handled (a direct call, in a tool or a test)
        return None
    if route is None or not route.rule.startswith("/packages/:filename"):
        return None
    return request.environ.get("route.url_args", {}).get("filename")
