"""A file of this instance's disk (a mirror's package file, a cached file) answered as
stock pypiserver answers one: the vendored bottle's ``static_file`` (Content-Type from the
name, Content-Length, Last-Modified, If-Modified-Since, Range, HEAD), but opened first.

``static_file`` checks that the path exists, stats it, then opens it. A sync (a removal, a
cache eviction, a removed-then-uploaded file renamed in) between those steps made an
unhandled FileNotFoundError (a 500) or, worse, a Content-Length of one file with the bytes
of another. Here every header comes from the one open file (``fstat``): a file removed
before the open is None (the caller's 404 or fetch), one removed after is still served
whole.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import time
import typing as t

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, parse_date, parse_range_header, request


def open_file_response(path: str, filename: str, extra_headers: t.Mapping[str, str]) -> t.Optional[HTTPResponse]:
    """``path`` answered as ``static_file(filename, mimetype=<guessed from filename>)``
    answers it (a 403 if it cannot be read), plus ``extra_headers``; None if there is no
    such regular file (now)."""
    try:
        opened = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except PermissionError:  # stock's answer (its os.access check), not a 500
        return HTTPError(403, "You do not have permission to access this file.", **extra_headers)
    try:
        return _response(opened, filename, extra_headers)
    except BaseException:
        opened.close()
        raise


def _response(opened: t.BinaryIO, filename: str, extra_headers: t.Mapping[str, str]) -> t.Optional[HTTPResponse]:
    found = os.fstat(opened.fileno())
    if not stat.S_ISREG(found.st_mode):
        opened.close()
        return None
    headers: dict[str, t.Any] = content_type_header(filename)
    size = found.st_size
    headers["Content-Length"] = size
    headers["Last-Modified"] = http_date(found.st_mtime)
    headers.update(extra_headers)
    since = request.environ.get("HTTP_IF_MODIFIED_SINCE")
    if since and (since_time := parse_date(since.split(";")[0].strip())) is not None \
            and since_time >= int(found.st_mtime):
        opened.close()
        headers["Date"] = http_date(time.time())
        return HTTPResponse(status=304, **headers)
    headers["Accept-Ranges"] = "bytes"
    if "HTTP_RANGE" in request.environ:
        ranges = list(parse_range_header(request.environ["HTTP_RANGE"], size))
        if not ranges:
            opened.close()
            return HTTPError(416, "Requested Range Not Satisfiable", **extra_headers)
        offset, end = ranges[0]
        headers["Content-Range"] = f"bytes {offset}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - offset)
        if request.method == "HEAD":
            opened.close()
            return HTTPResponse("", status=206, **headers)
        return HTTPResponse(_range(opened, offset, end - offset), status=206, **headers)
    if request.method == "HEAD":
        opened.close()
        return HTTPResponse("", **headers)
    return HTTPResponse(opened, **headers)  # the server sends it (sendfile) and closes it


def _range(opened: t.BinaryIO, offset: int, length: int, chunk: int = 1024 * 1024) -> t.Iterator[bytes]:
    """``length`` bytes from ``offset``; the file is closed when the body ends or is dropped."""
    try:
        opened.seek(offset)
        while length > 0:
            part = opened.read(min(length, chunk))
            if not part:
                break
            length -= len(part)
            yield part
    finally:
        opened.close()


def content_type_header(filename: str) -> dict[str, str]:
    """Stock's Content-Type: the type guessed from the name (``server_static`` passes it
    to ``static_file``, so no Content-Encoding), text types in UTF-8; none if unknown."""
    mimetype = mimetypes.guess_type(filename)[0]
    if not mimetype:
        return {}
    return {"Content-Type": f"{mimetype}; charset=UTF-8" if mimetype.startswith("text/") else mimetype}


def cache_control_header(seconds: t.Optional[int]) -> dict[str, str]:
    """Stock's Cache-Control for CACHE_CONTROL (``--cache-control``): none when unset or 0."""
    return {"Cache-Control": f"public, max-age={seconds}"} if seconds else {}


def http_date(seconds: float) -> str:
    """An HTTP date (RFC 7231), as bottle writes Last-Modified."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))
