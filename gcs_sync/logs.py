"""Log lines: readable text in dev, one Cloud Logging JSON object per line in prod.

    configure_logging      a worker's root handler, in the format of its TIER
    CloudLoggingFormatter  JSON with Cloud Logging's special fields: severity, message,
                           time, httpRequest; plus the ``json_fields`` a line carries
    RequestLog             WSGI middleware: one line per request, whatever answered it
    log_sync, log_bucket_write
                           one line per sync and per bucket write made for a request;
                           BucketMeter measures their seconds and bucket calls

A line's structured fields travel as ``extra={"json_fields": {...}}`` (the name
google-cloud-logging's own handlers use): the JSON format puts them beside ``message``,
the text format leaves them out (the message already says the same in words).

Never logged: a password, an ``Authorization`` header, a query string. A request line
names the user of its Basic credentials, decoded only as far as the ``:``.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import sys
import time
import typing as t

if t.TYPE_CHECKING:
    from .client import SyncReport
    from .config import Settings
    from .drivers.base import FileStoreDriver

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
REQUEST_LOGGER = "gcs_sync.requests"

# Cloud Logging's LogSeverity names, from the most severe down; other levels round down.
_SEVERITIES = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"),
               (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))
# Fields the formatter writes itself; a line's json_fields never replace them.
_RESERVED = frozenset({"severity", "message", "time", "logger", "process"})


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, on one line, with the fields Cloud Logging reads from a
    line written to stdout or stderr (Cloud Run, App Engine, GKE): ``severity``,
    ``message`` (with the traceback, so Error Reporting groups it), ``time`` (RFC 3339)
    and, on request lines, ``httpRequest``. ASCII only: valid JSON whatever the stream's
    encoding (non-ASCII text is escaped as ``\\uXXXX``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        payload: dict[str, object] = {
            "severity": severity(record.levelno),
            "message": message,
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "logger": record.name,
            "process": record.process,
        }
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict):
            payload.update((key, value) for key, value in fields.items() if key not in _RESERVED)
        return json.dumps(payload, default=str)


def severity(level: int) -> str:
    for threshold, name in _SEVERITIES:
        if level >= threshold:
            return name
    return "DEFAULT"


def formatter_for(tier: str) -> logging.Formatter:
    """JSON for prod; text for dev, and for anything else (a TIER not validated yet)."""
    return CloudLoggingFormatter() if tier == "prod" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: "Settings") -> None:
    """Send this package's logs to stderr in the tier's format, unless the host (a test,
    say) already configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter_for(settings.tier))
        root.addHandler(handler)
        # Python's warnings through the same handler: one format on the stream.
        logging.captureWarnings(True)
    logging.getLogger("gcs_sync").setLevel(settings.log_level)
    # pypiserver logs a dump of every request object, headers included, at INFO; its
    # warnings still show.
    logging.getLogger("pypiserver").setLevel(logging.WARNING)


# -- requests ------------------------------------------------------------------------

_request_log = logging.getLogger(REQUEST_LOGGER)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_USER = 100
_LOGGED_ENVIRON = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "HTTP_USER_AGENT", "REMOTE_ADDR", "SERVER_PROTOCOL")


class RequestLog:
    """WSGI middleware: one line per request, once its answer has been sent.

    Middleware rather than a Bottle plugin: a plugin sees only the routes it wraps, and
    the exception or value a route returns, not the answer. Here every request passes,
    with its final status and size: routing's 404 and 405, pypiserver's 401 and 403,
    the plugins' 413 and 503, bottle's 500 for a crashed route.

    It also hands the app a ``wsgi.errors`` that logs: bottle writes a crashed route's
    traceback there, which becomes one ERROR line (one JSON object in prod) instead of
    raw lines on stderr."""

    def __init__(self, app: t.Callable[..., t.Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        request = _Request(environ)
        environ["wsgi.errors"] = _ERRORS

        def recording_start_response(status: str, headers: list, exc_info: t.Any = None) -> t.Callable:
            request.status = status
            request.headers = headers
            write = start_response(status, headers, exc_info)

            def counted_write(data: bytes) -> None:
                request.sent += len(data)
                write(data)

            return counted_write

        try:
            body = self.app(environ, recording_start_response)
        except Exception:
            request.status = "500 Internal Server Error"
            request.finish()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(body, file_wrapper):
            # A download the server sends itself (sendfile): left as it is, so it still
            # can; its close() tells when it is done, its Content-Length how much.
            return _finish_on_close(body, request)
        return _CountedBody(body, request)


class _Request:
    def __init__(self, environ: dict) -> None:
        # A copy: bottle rewrites PATH_INFO in place (decoded) while it routes.
        self.environ = {key: environ[key] for key in _LOGGED_ENVIRON if key in environ}
        self.user = basic_user(environ.get("HTTP_AUTHORIZATION"))
        self.started = time.perf_counter()
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.sent = 0
        self._done = False

    def finish(self, sent: t.Optional[int] = None) -> None:
        if self._done:
            return
        self._done = True
        seconds = time.perf_counter() - self.started
        log_request(self.environ, self.user, self.status, self.sent if sent is None else sent, seconds)

    def content_length(self) -> int:
        for name, value in self.headers:
            if name.lower() == "content-length" and value.strip().isdigit():
                return int(value)
        return self.sent


class _CountedBody:
    def __init__(self, body: t.Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> t.Iterator[bytes]:
        for chunk in self._body:
            self._request.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request.finish()


def _finish_on_close(body: t.Any, request: _Request) -> t.Any:
    close = getattr(body, "close", None)

    def close_and_log() -> None:
        try:
            if close is not None:
                close()
        finally:
            request.finish(request.content_length())

    try:
        body.close = close_and_log
    except AttributeError:  # a server's wrapper with __slots__: log now, before the transfer
        request.finish(request.content_length())
    return body


class _ErrorLog:
    """``wsgi.errors`` for the app: each write is one ERROR line."""

    def write(self, text: str) -> None:
        if text.strip():
            _request_log.error("%s", text.rstrip())

    def writelines(self, lines: t.Iterable[str]) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        pass  # nothing is buffered here


_ERRORS = _ErrorLog()


def log_request(environ: dict, user: t.Optional[str], status: str, sent: int, seconds: float) -> None:
    """The request line: method, path (never the query string, which may carry a token),
    status, bytes of body sent, milliseconds, the Basic user's name, the user agent."""
    code = int(status.split(None, 1)[0]) if status[:3].isdigit() else 500
    method = environ.get("REQUEST_METHOD", "")
    path = _wsgi_text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    agent = _wsgi_text(environ.get("HTTP_USER_AGENT", ""))
    words = [_printable(method), _printable(path), str(code), f"{sent} B", f"{seconds * 1000:.1f} ms"]
    if user is not None:
        words.append(f"user={_printable(user)}")
    if agent:
        words.append(_printable(agent.split(None, 1)[0]))  # the product: pip/24.0, twine/6.1.0
    http_request = {
        "requestMethod": method,
        "requestUrl": path,
        "status": code,
        "responseSize": str(sent),  # an int64: a string in JSON, as the API spells it
        "userAgent": agent,
        "remoteIp": environ.get("REMOTE_ADDR", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "latency": f"{seconds:.6f}s",
    }
    fields: dict[str, object] = {"httpRequest": http_request}
    if user is not None:
        fields["user"] = user
    # A 5xx is worth a look; its cause is logged on its own line.
    level = logging.WARNING if code >= 500 else logging.INFO
    _request_log.log(level, "%s", " ".join(words), extra={"json_fields": fields})


def basic_user(authorization: t.Optional[str]) -> t.Optional[str]:
    """The user name of Basic credentials; None without them. Only the part before the
    ``:`` is returned: the password is never kept."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except ValueError:  # binascii.Error: not credentials anyone could check; pypiserver refuses them
        return None
    user, colon, _ = decoded.partition(b":")
    if not colon:  # no "user:" part: the whole token may be a secret
        return None
    return user.decode("utf-8", "replace")[:_MAX_USER]


def _wsgi_text(value: str) -> str:
    """A WSGI string (bytes as latin-1) as the UTF-8 text the client sent."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it
        return value


def _printable(text: str) -> str:
    """Control characters escaped, so a crafted path or name cannot start a forged line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


# -- syncs and bucket writes ---------------------------------------------------------

# Event kind -> (the field in the JSON, the verb in the message).
_KINDS = {
    "RemoteAdded": ("added", "pulled"),
    "RemoteChanged": ("changed", "replaced"),
    "RemoteDeleted": ("removed", "removed"),
    "LocalAdded": ("pushed", "pushed"),
    "LocalChanged": ("pushed_over", "pushed over the bucket copy"),
    "LocalDeleted": ("deleted", "deleted from the bucket"),
}
_NAMES_IN_MESSAGE = 3
_NAMES_IN_FIELDS = 20


class BucketMeter:
    """Seconds and bucket calls since it was made (calls by the whole worker meanwhile)."""

    def __init__(self, driver: "FileStoreDriver") -> None:
        self._driver = driver
        self._started = time.monotonic()
        self._calls = sum(driver.calls.values())

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started

    @property
    def bucket_calls(self) -> int:
        return sum(self._driver.calls.values()) - self._calls


def log_sync(logger: logging.Logger, store_url: str, report: "SyncReport") -> None:
    """One INFO line for a sync that listed the bucket: what changed (counts by kind and
    the first few names), what failed, seconds, bucket calls."""
    names: dict[str, list[str]] = {field: [] for field, _ in _KINDS.values()}
    for event in report.applied:
        field = _KINDS[type(event).__name__][0]
        names[field].append(event.name)
    names["failed"] = [event.name for event, _ in report.failed]
    verbs = {**dict(_KINDS.values()), "failed": "failed"}
    changes = ", ".join(
        f"{verbs[field]} {len(found)} ({_first(found)})" for field, found in names.items() if found
    ) or "no changes"
    sync = {
        "store": store_url,
        "listed": True,
        **{field: len(found) for field, found in names.items()},
        "skipped": len(report.skipped_names),
        "seconds": round(report.seconds, 6),
        "bucket_calls": report.bucket_calls,
        "files": {field: sorted(found)[:_NAMES_IN_FIELDS] for field, found in names.items() if found},
    }
    logger.info("sync with %s: %s; %.3fs, %d bucket calls", store_url, changes, report.seconds,
                report.bucket_calls, extra={"json_fields": {"sync": sync}})


def log_marker_check(logger: logging.Logger, store_url: str, meter: BucketMeter) -> None:
    """A check that found the change marker where it was: nothing to list. DEBUG: it
    happens every SYNC_INTERVAL while requests arrive."""
    sync = {"store": store_url, "listed": False, "seconds": round(meter.seconds, 6),
            "bucket_calls": meter.bucket_calls}
    logger.debug("sync with %s: the change marker has not moved, nothing to list; %.3fs, %d bucket calls",
                 store_url, sync["seconds"], sync["bucket_calls"], extra={"json_fields": {"sync": sync}})


def log_bucket_write(logger: logging.Logger, action: str, name: str, store_url: str, meter: BucketMeter, *,
                     version: t.Optional[str] = None, size: t.Optional[int] = None) -> None:
    """One INFO line for a bucket write made for a request: an upload's "store" or a
    removal's "delete", with its seconds and bucket calls."""
    seconds, calls = meter.seconds, meter.bucket_calls
    write: dict[str, object] = {"action": action, "file": name, "store": store_url, "seconds": round(seconds, 6),
                                "bucket_calls": calls}
    if action == "store":
        write.update(version=version, bytes=size)
        what = f"stored {name!r} in {store_url} (version {version}, {size} bytes)"
    else:
        what = f"deleted {name!r} from {store_url}"
    logger.info("%s in %.3fs, %d bucket calls", what, seconds, calls, extra={"json_fields": {"bucket_write": write}})


def _first(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:_NAMES_IN_MESSAGE])
    return f"{shown}, ..." if len(names) > _NAMES_IN_MESSAGE else shown
