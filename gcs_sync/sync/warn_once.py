"""Warnings a sync would repeat every interval, said once per process: bucket objects
that are not package files, and files here that are not pushed (PUSH_LOCAL_CHANGES off)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

log = logging.getLogger("gcs_sync.client")  # the name operators' log queries know


class OnceWarnings:
    def __init__(self) -> None:
        self._reported_odd_names: set[str] = set()
        self._reported_local_only: set[str] = set()

    def local_only(self, names: Iterable[str], folder: Path) -> None:
        for name in names:
            if name not in self._reported_local_only:
                self._reported_local_only.add(name)
                log.warning("%r is in %s but not in the bucket; it is not uploaded (PUSH_LOCAL_CHANGES is off)",
                            name, folder)

    def odd_name(self, name: str, store_url: str) -> None:
        if name not in self._reported_odd_names:  # once per process, not every interval
            self._reported_odd_names.add(name)
            log.warning("skipping bucket object %r under %s: not a package filename", name, store_url)
