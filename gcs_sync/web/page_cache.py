"""Project pages kept as rendered, for as long as the project's files are the same.

A page of a hundred files costs about half a millisecond of CPU to sort and render, the
greater part of what a worker spends on ``/simple/<p>/``, and clients ask for the same
few pages over and over. The index hands out one immutable tuple of a project's files and
replaces it whenever a file of that project changes (``index.py``), so that tuple is the
page's version: a page is served again only while the index still hands out the very
tuple it was rendered from (compared by identity, and held, so its id is never reused).

Bounded in bytes (``PAGE_CACHE_BYTES``), least recently served pages dropped first, so a
worker's memory does not grow with the projects clients ask for.
"""

from __future__ import annotations

import collections
import threading
import typing as t

PAGE_CACHE_BYTES = 4 * 1024 * 1024
PageKey = tuple[str, ...]  # what else the page depends on: project, media type, base URL


class PageCache:
    def __init__(self, max_bytes: int = PAGE_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._pages: collections.OrderedDict[PageKey, tuple[object, str]] = collections.OrderedDict()

    def page(self, key: PageKey, source: object, render: t.Callable[[], str]) -> str:
        """The page of ``key`` rendered from ``source`` (the index's tuple of the project's
        files): kept from an earlier request if it was rendered from this very object,
        else rendered now (outside the lock) and kept if it fits."""
        with self._lock:
            kept = self._pages.get(key)
            if kept is not None and kept[0] is source:
                self._pages.move_to_end(key)
                return kept[1]
        body = render()
        size = len(body)
        if size > self._max_bytes // 4:
            return body  # a very large project: not worth a quarter of the cache
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._pages[key] = (source, body)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, (_, dropped) = self._pages.popitem(last=False)
                self._bytes -= len(dropped)
        return body

    def __len__(self) -> int:
        return len(self._pages)
