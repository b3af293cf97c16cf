"""Serving a package file (or a PEP 658 metadata file) from the on-demand cache
(``PACKAGE_FILES=cache``; the cache itself is ``gcs_sync.sync.cache``).

A hit is served as stock pypiserver's ``server_static`` serves a local file: as the vendored
bottle's ``static_file`` (``local_file``: Range, If-Modified-Since, HEAD, Last-Modified, the mimetype
guessed from the file's name, no Content-Disposition), the same ``Cache-Control``, plus an
``ETag`` (the sha256, answered with 304 on a matching If-None-Match). A miss streams the
file from the bucket to the client while it is cached: a generator body with the
Content-Length of the file, its first byte sent before its last is fetched. A Range request
on a miss fetches the whole file into the cache first, then serves the range from there.
A file that cannot be read from the bucket gets a 503 naming it (before any byte); one that
breaks off mid-stream gets its connection cut (see ``Transfer``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, ContextManager, Iterator, Optional

from pypiserver.bottle_wrapper import HTTPError, HTTPResponse, request

from gcs_sync.errors import StorageError, failure_reason
from gcs_sync.sync.cache import FileCache, Hit, Transfer
from gcs_sync.web.local_file import cache_control_header, content_type_header, http_date, open_file_response

log = logging.getLogger("gcs_sync.cache")


def cached_response(
    cache: FileCache, filename: str, *, sha256: str, size: int,
    open_source: Callable[[], ContextManager[Iterator[bytes]]], cache_control: Optional[int],
) -> HTTPResponse:
    """Serve ``filename`` (these bytes: ``sha256``, ``size``) from the cache, fetching it first if
    needed. Raises HTTPError("503 ...") naming the file if it is not cached and the bucket cannot be
    read."""
    etag = f'"{sha256}"'
    served = _from_cache(cache, cache.lookup(sha256), filename, etag, cache_control)
    if served is not None:
        return served
    if _matches(request.environ.get("HTTP_IF_NONE_MATCH"), etag):
        return HTTPResponse(status=304, ETag=etag, Date=http_date(time.time()))
    headers = _headers(filename, etag, cache_control, size, time.time(), ranges=cache.fits(size))
    if request.method == "HEAD":
        return HTTPResponse("", **headers)  # no bucket read for a HEAD
    try:
        transfer = cache.transfer(filename, sha256, size, open_source)
    except OSError as exc:  # the cache folder itself failed (its locks): still serve the file
        log.warning("%s: the cache cannot be used (%s); streamed without caching", filename, exc)
        transfer = Transfer(filename, sha256, size, open_source)
    if transfer.hit is not None:  # another request fetched it while this one waited
        served = _from_cache(cache, transfer.hit, filename, etag, cache_control)
        if served is not None:
            return served
        transfer = Transfer(filename, sha256, size, open_source)  # and it was evicted at once
    try:
        transfer.start()
        if "HTTP_RANGE" in request.environ and transfer.caching:
            transfer.complete()
            served = _from_cache(cache, cache.lookup(sha256), filename, etag, cache_control)
            if served is not None:
                return served
            # Not cached after all (the folder failed: logged), and the bytes are spent.
            raise StorageError("download", filename, "read, but it could not be cached to serve a range")
    except StorageError as exc:
        log.error("%s: cannot be read from the bucket, answered 503: %s", filename, exc)
        raise HTTPError(503, f"Bucket read failed for {filename} ({failure_reason(exc)})") from exc
    headers["Last-Modified"] = http_date(transfer.started)
    return HTTPResponse(transfer.chunks(), **headers)


def _from_cache(cache: FileCache, hit: Optional[Hit], filename: str, etag: str,
                cache_control: Optional[int]) -> Optional[HTTPResponse]:
    """The cached file, as stock pypiserver serves a file; None if it is not (any longer) there."""
    if hit is None:
        return None
    if _matches(request.environ.get("HTTP_IF_NONE_MATCH"), etag):
        return HTTPResponse(status=304, ETag=etag, Date=http_date(time.time()))
    headers = {"ETag": etag, **cache_control_header(cache_control)}
    # None if evicted between the look and the open; once open, served whole.
    return open_file_response(str(hit.path), filename, headers)


def _headers(filename: str, etag: str, cache_control: Optional[int], size: int, modified: float,
             *, ranges: bool) -> dict[str, str]:
    """The headers ``static_file`` would send for this file (and the ETag)."""
    headers = {"Content-Length": str(size), "Last-Modified": http_date(modified), "ETag": etag}
    headers.update(content_type_header(filename))
    if ranges:  # a later Range request is served from the cache; a file too large is never cached
        headers["Accept-Ranges"] = "bytes"
    headers.update(cache_control_header(cache_control))
    return headers


def _matches(if_none_match: Optional[str], etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
