"""The web side: a Bottle plugin around pypiserver's routes.

    request ─▶ pre-sync ─▶ pypiserver route ─▶ post-sync ─▶ response
                 │          (stages writes)       │
                 ▼                                ▼
         pull if the view is            push staged uploads and removals
         older than SYNC_INTERVAL       to the bucket; only then "200 OK"

A plugin (not ``after_request``) because it must see the route's real outcome: Bottle's
hooks see 200 for every request.

``RequestBodyGuard``, a second plugin around that one, checks the request body before
anything reads it (its size, MAX_UPLOAD_SIZE), while it is read (that it is complete),
and that bottle could parse it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import typing as t

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, request

from gcs_sync.sync.client import StorageClient
from gcs_sync.errors import ObjectExists, StorageError, StorageUnavailable, WritesSuspended
from gcs_sync.sync.folder import StagedFile

log = logging.getLogger("gcs_sync.plugin")  # the name operators' log queries know

_ENVIRON_KEY = "gcs_sync.pending_changes"


@dataclasses.dataclass
class PendingChanges:
    """What one request's route asked to change; applied only if the route succeeded."""

    uploads: list[StagedFile] = dataclasses.field(default_factory=list)
    removals: list[str] = dataclasses.field(default_factory=list)

    def has_upload(self, name: str) -> bool:
        return any(staged.name == name for staged in self.uploads)

    def discard(self) -> None:
        for staged in self.uploads:
            staged.path.unlink(missing_ok=True)
        self.uploads.clear()
        self.removals.clear()

    def commit(self, client: StorageClient, *, overwrite: bool) -> None:
        try:
            if self.uploads:
                client.publish(self.uploads, overwrite=overwrite)
            if self.removals:
                client.retract(self.removals)
        finally:
            self.discard()


def current_changes() -> PendingChanges:
    """The pending changes of the request being handled (Bottle's request is per thread)."""
    changes = request.environ.get(_ENVIRON_KEY)
    if changes is None:
        raise RuntimeError("package writes are only possible inside a request wrapped by BucketSyncPlugin")
    return changes


class BucketSyncPlugin:
    name = "gcs_sync"
    api = 2

    def __init__(self, client: StorageClient, *, overwrite: bool, unsynced_routes: t.Iterable[str],
                 read_only_posts: t.Iterable[str] = ()) -> None:
        self.client = client
        self.overwrite = overwrite
        self.unsynced_routes = frozenset(unsynced_routes)
        # POST routes that only read (XML-RPC search): checked like any GET.
        self.read_only_posts = frozenset(read_only_posts)

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        if route.rule in self.unsynced_routes:
            return callback  # health checks and the favicon never touch the bucket

        reads_only = route.rule in self.read_only_posts

        def synced_route(*args: t.Any, **kwargs: t.Any) -> t.Any:
            if request.method != "POST" or reads_only:
                # Writes skip it: the bucket's create-only write decides an upload, a
                # removal checks only if it does not know the file (backend.find_version),
                # and a bucket that is down must cost a write one timeout, not two.
                self.client.ensure_fresh()
            changes = PendingChanges()
            request.environ[_ENVIRON_KEY] = changes
            try:
                result = callback(*args, **kwargs)
            except BaseException:
                changes.discard()  # a refused or failed route changes nothing
                raise
            if isinstance(result, HTTPResponse) and result.status_code >= 400:
                changes.discard()
                return result
            if changes.uploads or changes.removals:
                self._commit(changes)
            return result

        return synced_route

    def _commit(self, changes: PendingChanges) -> None:
        names = [staged.name for staged in changes.uploads] + changes.removals
        try:
            changes.commit(self.client, overwrite=self.overwrite)
        except ObjectExists as exc:
            log.warning("upload of %r refused: already in the bucket (%s)", exc.object_name, exc.cause)
            raise _already_exists(exc) from exc
        except StorageError as exc:
            kept = exc.changed_before_failure
            if kept:
                outcome = f"Already changed before the failure: {', '.join(kept)}."
            elif isinstance(exc, WritesSuspended):
                outcome = "Nothing was sent to the bucket, so nothing was changed."
            elif isinstance(exc, StorageUnavailable):
                # A write the bucket did not answer may still land: say so. A retry is safe
                # (the same bytes again are accepted; a delete of a missing file is a success).
                outcome = "The bucket did not confirm the change, so it may still have been applied."
            else:
                outcome = "Nothing was changed."
            log.error("bucket write for %s failed: %s. %s", names, exc, outcome)
            # The reason goes in the status line too: that is what twine and pip print.
            raise HTTPError(
                f"503 Bucket write failed for {_filename(exc)}",
                f"Could not apply the change to {_filename(exc)!r} in the bucket: {exc.cause}\n"
                f"{outcome} Try again later.\n",
            ) from exc


def _filename(exc: StorageError) -> str:
    return exc.object_name.rsplit("/", 1)[-1]


def _already_exists(exc: ObjectExists) -> HTTPError:
    # Same answer as pypiserver's own local check (pypiserver._app.file_upload):
    # 409, or 400 for twine, which expects PyPI's status for an existing file.
    code = 400 if "twine" in request.headers.get("User-Agent", "") else 409
    message = f"Package {_filename(exc)!r} already exists!\n  You may start server with `--overwrite` option."
    if exc.changed_before_failure:
        kept = ", ".join(exc.changed_before_failure)
        log.error("after the conflict on %r, %s stayed in the bucket (undo failed)", exc.object_name, kept)
        message += f"\n  Stored before the conflict and not removed again: {kept}."
    return HTTPError(code, message)


class RequestBodyGuard:
    """Bounds and checks the request body before any route reads it.

    Installed outside ``BucketSyncPlugin``, so it runs before the sync, before
    pypiserver's auth check and before bottle parses the form (routing and hooks never
    read the body). Every refusal is an ``HTTPError``, so bottle answers it as it answers
    pypiserver's own; a route fails while bottle reads the form, before pypiserver
    stages any file, so nothing is written.

    - Content-Length over the limit (MAX_UPLOAD_SIZE, or a route's own lower one: the
      XML-RPC search's): 413 at once, without reading a byte.
    - No Content-Length (a chunked body): counted as it is read; 413 once over the limit.
    - A body that pauses longer than gunicorn's timeout between two reads: 408.
    - A body that ends before its Content-Length (a client that gave up, a cut
      connection): 400. Bottle would hand the parser what came, and pypiserver would
      store a truncated file.
    - A form bottle cannot parse (a multipart body without a boundary, control characters
      in a part's headers): 400. The parser raises ValueError, which bottle makes a 500.
    """

    name = "gcs_sync_body_guard"
    api = 2

    def __init__(self, max_size: int, route_limits: t.Optional[dict[str, tuple[int, str]]] = None) -> None:
        """``route_limits``: a lower limit for some routes, as (bytes, its name in the 413)."""
        self.max_size = max_size
        self.route_limits = route_limits or {}

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        limit, limit_name = self.route_limits.get(route.rule, (self.max_size, "MAX_UPLOAD_SIZE"))
        limit = min(limit, self.max_size)

        def guarded_route(*args: t.Any, **kwargs: t.Any) -> t.Any:
            environ = request.environ
            self._guard(environ, limit, limit_name)
            try:
                return callback(*args, **kwargs)
            except OSError as exc:
                # Bottle spools a large body to a temporary file (TMPDIR): on a full disk
                # that fails before any route code runs. A 503 naming the cause, not a 500.
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                log.error("request to %s refused: the local disk is full: %s", request.path, exc)
                raise HTTPError(
                    "503 Local disk full", "This server's local disk is full; nothing was stored. Try again later.\n"
                ) from exc
            except ValueError as exc:
                # The body was read but bottle has no form: the ValueError is its parser's.
                # (The form is parsed lazily, by the route, after pypiserver's auth check.)
                if _BODY_KEY in environ and _FORM_KEY not in environ:
                    raise HTTPError(400, f"Malformed request body: {exc}") from exc
                raise

        return guarded_route

    def _guard(self, environ: dict, limit: int, limit_name: str) -> None:
        declared = _content_length(environ.get("CONTENT_LENGTH"))
        if declared is not None and declared > limit:
            raise _too_large(limit, limit_name, f"{declared} bytes")
        if "wsgi.input" in environ:
            environ["wsgi.input"] = _GuardedBody(environ["wsgi.input"], limit, limit_name, declared)


# Where bottle 0.12 keeps the body it has read and the form it has parsed from it.
_BODY_KEY = "bottle.request.body"
_FORM_KEY = "bottle.request.post"


def _content_length(value: t.Optional[str]) -> t.Optional[int]:
    if value is None or value.strip() == "":
        return None
    if not value.strip().isdigit():
        raise HTTPError(400, f"Bad Content-Length: {value!r}")
    return int(value)


def _too_large(limit: int, limit_name: str, size: str) -> HTTPError:
    log.warning("refused a request body of %s: over %s (%d bytes)", size, limit_name, limit)
    # The limit goes in the status line too: that is what twine prints.
    return HTTPError(
        f"413 Request body over {limit_name} ({limit} bytes)",
        f"Request body too large: {size}, over this index's limit of {limit} bytes ({limit_name}).\n",
    )


class _GuardedBody:
    """The WSGI input stream, counted: over the limit, or ended before its declared
    length, a read raises the HTTPError the client gets."""

    def __init__(self, stream: t.BinaryIO, limit: int, limit_name: str, declared: t.Optional[int]) -> None:
        self._stream = stream
        self._limit = limit
        self._limit_name = limit_name
        self._declared = declared
        self._seen = 0

    def read(self, size: t.Optional[int] = -1) -> bytes:
        with self._paused():
            data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        return self._count(data, to_end=size is None or size < 0 or (size > 0 and not data))

    def readline(self, size: t.Optional[int] = -1) -> bytes:
        with self._paused():
            data = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        return self._count(data, to_end=not data and size != 0)

    @contextlib.contextmanager
    def _paused(self) -> t.Iterator[None]:
        # gunicorn.conf.py's worker bounds each pause of a body (its timeout): the read
        # times out, which bottle would make a 500 with a traceback.
        try:
            yield
        except TimeoutError as exc:
            log.warning("refused a request body that paused too long after %d bytes", self._seen)
            raise HTTPError(
                408, f"Request body paused too long after {self._seen} bytes; nothing was stored.\n",
            ) from exc

    def _count(self, data: bytes, *, to_end: bool) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise _too_large(self._limit, self._limit_name, f"more than {self._limit} bytes")
        if to_end and self._declared is not None and self._seen < self._declared:
            log.warning("refused an incomplete request body: %d of %d bytes", self._seen, self._declared)
            raise HTTPError(
                400, f"Incomplete request body: it ended after {self._seen} of the {self._declared} bytes "
                "its Content-Length announced; nothing was stored.\n",
            )
        return data
