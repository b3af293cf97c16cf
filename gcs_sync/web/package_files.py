"""How ``GET /packages/<file>`` answers: PACKAGE_FILES=mirror, cache or redirect.

    request ─▶ auth("download") ─▶ mode?
               (pypiserver's 401/403)  │
        mirror ─── held here? ────yes──┼──▶ the local copy, as the stock callback serves it
                         │ no (catalogued: the fill has not brought it yet)
                         └─────────────┼──▶ the bytes, through the local cache
        redirect ─ in the index? ─yes──┼──▶ 302 to a signed URL of the bucket's object
        cache ──── in the index? ─yes──┴──▶ size >= REDIRECT_MIN_BYTES and signing works?
                         │                     yes: 302 to a signed URL
                         no                    no:  the bytes, through the local cache
                         ▼                          (fetched from the bucket once)
               the stock callback (pypiserver's 404)

A core metadata file (PEP 658, ``<file>.metadata``) is small and never redirected: in
cache and redirect mode (and in mirror mode, for a file not held here yet) it goes through
the cache, read from the bucket's metadata object.

``check_package_files`` runs at start-up: in redirect mode a URL that cannot be signed
stops the start; in cache mode it is a warning, and large files then go through the
instance (App Engine and Cloud Run refuse responses over 32 MB).
"""

from __future__ import annotations

import contextlib
import logging
import typing as t

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, request

from gcs_sync.config import Settings
from gcs_sync.drivers import FileStoreDriver
from gcs_sync.drivers.base import Version
from gcs_sync.errors import (
    ConfigError,
    ObjectNotFound,
    SigningNotPermitted,
    SigningUnavailable,
    StorageError,
    StorageUnavailable,
    failure_reason,
)
from gcs_sync.records.record import METADATA_SUFFIX, metadata_object
from gcs_sync.sync.cache import FileCache
from gcs_sync.web.cached_download import cached_response
from gcs_sync.web.index import IndexedFile, PackageIndex
from gcs_sync.web.local_file import cache_control_header, open_file_response

if t.TYPE_CHECKING:
    from pypiserver.config import RunConfig

log = logging.getLogger("gcs_sync.package_files")  # the name operators' log queries know

DOWNLOAD_RULE = "/packages/:filename#.*#"  # pypiserver's download route


def check_package_files(settings: Settings, driver: FileStoreDriver) -> bool:
    """Whether URLs can be signed, checked once at start-up (any mode but mirror). In
    redirect mode a refusal is a ConfigError naming PACKAGE_FILES (the start stops); an
    outage is logged and the start goes on (each redirect tries again). In cache mode a
    refusal is a warning: large files are then served through the instance."""
    if settings.package_files == "mirror":
        return False
    try:
        driver.check_signing()
    except StorageUnavailable as exc:
        log.error("could not sign a URL at start-up (will try again per download): %s", exc)
        return True
    except SigningUnavailable as exc:
        if settings.package_files == "redirect":
            raise ConfigError("PACKAGE_FILES", f"redirect needs signed URLs, and {_why(exc)}") from exc
        log.warning(
            "PACKAGE_FILES=cache: URLs cannot be signed (%s), so files of REDIRECT_MIN_BYTES (%d bytes) or more "
            "are served through this instance; App Engine and Cloud Run refuse responses over 32 MB",
            _why(exc), settings.redirect_min_bytes,
        )
        return False
    return True


def _why(exc: SigningUnavailable) -> str:
    kind = "the signer was refused" if isinstance(exc, SigningNotPermitted) else "none can be made here"
    return f"{kind}: {exc}"


@contextlib.contextmanager
def _bytes_stream(data: bytes) -> t.Iterator[t.Iterator[bytes]]:
    """Bytes already read (a small bucket object), as the cache reads a source."""
    yield iter((data,))


@contextlib.contextmanager
def _note_stream(driver: FileStoreDriver, name: str) -> t.Iterator[t.Iterator[bytes]]:
    """A small bucket object read when the cache asks for it (one read, one chunk)."""
    data = driver.read_note(name)
    if data is None:
        raise ObjectNotFound("download", name, "no such object in the bucket")
    yield iter((data,))


@contextlib.contextmanager
def _object_stream(driver: FileStoreDriver, name: str, version: str) -> t.Iterator[t.Iterator[bytes]]:
    """The object's bytes at ``version``; at its current version if that is not known yet
    (catalogued from a feed entry: its version comes with the next full listing). The
    cache checks the sha256 either way, so another file's bytes are never served."""
    if not version:
        found = driver.stat(name)
        if found is None:
            raise ObjectNotFound("download", name, "no such object in the bucket")
        version = found.version
    with driver.open_stream(name, Version(version)) as chunks:
        yield chunks


class PackageFilesPlugin:
    """Around pypiserver's download route (in mirror mode, only files not held here yet
    are answered here). pypiserver's own auth check comes first, on its config: the same
    401 (with its challenge) and 403, before anything is signed or read."""

    name = "gcs_sync_package_files"
    api = 2

    def __init__(self, config: "RunConfig", settings: Settings, index: PackageIndex, driver: FileStoreDriver,
                 cache: t.Optional[FileCache], *, can_sign: bool) -> None:
        self.config = config  # read at request time, as pypiserver does
        self.mode = settings.package_files
        self.index = index
        self.driver = driver
        self.cache = cache
        self.can_sign = can_sign  # checked at start-up (check_package_files)
        self.expiry = settings.signed_url_expiry
        self.redirect_min_bytes = settings.redirect_min_bytes
        self.cache_control = settings.cache_control

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        if route.rule != DOWNLOAD_RULE:
            return callback

        def download(**kwargs: t.Any) -> t.Any:
            _authorize(self.config, "download")
            filename = kwargs["filename"]
            answer = self._answer(filename)
            # Not in the index: the stock callback's 404 (its auth again: passed once, passes again).
            return callback(**kwargs) if answer is None else answer

        return download

    def _answer(self, filename: str) -> t.Optional[HTTPResponse]:
        self.index.refresh()
        pkg = self.index.get(filename)
        if pkg is None:
            if not filename.endswith(METADATA_SUFFIX):
                return None
            package = self.index.get(filename[: -len(METADATA_SUFFIX)])
            # A mirror's file held here has its metadata file here too.
            if self.mode == "mirror" and package is not None and package.held:
                metadata = self.index.metadata_file(filename)
                return None if metadata is None else self._held(filename, str(metadata.fn))
            return self._metadata(filename)
        if self.mode == "mirror":
            return self._held(filename, str(pkg.fn)) if pkg.held else self._cached(pkg)
        if self.mode == "redirect":
            return self._redirect(filename)
        if self.can_sign and pkg.size is not None and pkg.size >= self.redirect_min_bytes:
            try:
                return self._redirect(filename)
            except HTTPError:
                pass  # logged: served through the cache instead, as when signing never worked
        return self._cached(pkg)

    def _held(self, filename: str, path: str) -> HTTPResponse:
        """A file of the local folder, as the stock route serves it, but opened before its
        headers are made (``local_file``): a sync removing it at that moment is a 404, not a 500."""
        served = open_file_response(path, filename, cache_control_header(self.cache_control))
        if served is None:
            log.info("GET /packages/%s: removed from the local folder as it was asked for: 404", filename)
            return HTTPError(404, f"Not Found ({filename} does not exist)\n\n")
        return served

    def _redirect(self, filename: str) -> HTTPResponse:
        try:
            url = self.driver.signed_url(filename, self.expiry)
        except StorageError as exc:
            log.error("GET /packages/%s: no signed URL: %s", filename, exc)
            raise HTTPError(
                "503 Cannot redirect to the bucket",
                f"Cannot serve {filename}: no signed URL of it can be made now. Try again later.\n",
            ) from exc
        log.debug("GET /packages/%s: redirected to the bucket (URL valid %ds)", filename, self.expiry)
        # A signed URL expires: no cache may keep the redirect.
        return HTTPResponse(status=302, headers={"Location": url, "Cache-Control": "no-store"})

    def _cached(self, pkg: IndexedFile) -> t.Optional[HTTPResponse]:
        filename = str(pkg.relfn)
        if self.cache is None or pkg.sha256 is None or pkg.size is None or pkg.remote_version is None:
            # Not known from the state yet (no digest or version): the local copy, if any.
            log.warning("GET /packages/%s: not served through the cache (digest, size or version unknown)", filename)
            return None
        version = pkg.remote_version
        driver = self.driver
        return cached_response(
            self.cache, filename, sha256=pkg.sha256, size=pkg.size,
            open_source=lambda: _object_stream(driver, filename, version),
            cache_control=self.cache_control,
        )

    def _metadata(self, filename: str) -> t.Optional[HTTPResponse]:
        """``<package file>.metadata`` from the bucket's metadata object, through the cache;
        None (a 404) if the file has none."""
        package = self.index.get(filename[: -len(METADATA_SUFFIX)])
        record = None if package is None else package.record
        if record is None or not record.metadata_sha256 or self.cache is None:
            return None
        sha256, name = record.metadata_sha256, metadata_object(record.filename)
        driver = self.driver
        source: t.Callable[[], t.ContextManager[t.Iterator[bytes]]]
        hit = self.cache.lookup(sha256)
        if hit is not None:
            # Served from the cache; read from the bucket only if evicted in the meantime.
            size, source = hit.size, lambda: _note_stream(driver, name)
        else:
            # Small: read whole, once, for its size; the cache keeps it from then on.
            try:
                found = self.driver.read_note(name)
            except StorageError as exc:
                log.error("GET /packages/%s: cannot be read from the bucket, answered 503: %s", filename, exc)
                raise HTTPError(503, f"Bucket read failed for {filename} ({failure_reason(exc)})") from exc
            if found is None:
                log.warning("GET /packages/%s: its record names a metadata file, but the bucket has none (%s)",
                            filename, name)
                return None
            size, source = len(found), lambda: _bytes_stream(found)
        return cached_response(self.cache, filename, sha256=sha256, size=size, open_source=source,
                               cache_control=self.cache_control)


def _authorize(config: "RunConfig", action: str) -> None:
    """pypiserver's ``auth(action)`` (``pypiserver._app.auth``), on its config: the same
    401 (with its challenge) and 403."""
    if action not in config.authenticate:
        return
    credentials = request.auth
    if not credentials or credentials[1] is None:
        raise HTTPError(401, headers={"WWW-Authenticate": 'Basic realm="pypi"'})
    if not config.auther(*credentials):
        raise HTTPError(403)
