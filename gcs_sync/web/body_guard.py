"""RequestBodyGuard: a Bottle plugin, installed around every other, that checks the
request body before anything reads it (its size, MAX_UPLOAD_SIZE), while it is read
(that it is complete), and that bottle could parse it."""

from __future__ import annotations

import contextlib
import errno
import logging
import typing as t

from pypiserver.bottle_wrapper import HTTPError, request

log = logging.getLogger("gcs_sync.plugin")  # the name operators' log queries know


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
