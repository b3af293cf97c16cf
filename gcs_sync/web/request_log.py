"""The request log: WSGI middleware that writes one line per request, whatever answered it.

Never logged: a password, an ``Authorization`` header, a query string. A request line
names the user of its Basic credentials, decoded only as far as the ``:``.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import typing as t

REQUEST_LOGGER = "gcs_sync.requests"
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
