"""Small file utilities every layer uses: temp names, fingerprints, hashing, atomic JSON.

Every write into a served folder goes to a dot-prefixed temporary file in the same folder
and is renamed into place (``os.replace``), so a reader sees a whole file or nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

_CHUNK = 1 << 20
TEMP_SUFFIX = ".part"
# Of the target's name, only this much goes into a temp name: with the dot, a random
# part and the suffix it stays within one path component (255) for any package name.
_TEMP_NAME_KEEP = 200


def temp_name(name: str) -> str:
    """A hidden, unique name for a temporary file that becomes ``name``."""
    return f".{name[:_TEMP_NAME_KEEP]}.{uuid.uuid4().hex}{TEMP_SUFFIX}"


def fingerprint(stat: os.stat_result) -> str:
    """Changes whenever a file is replaced or rewritten (a rename gives a new inode)."""
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def fingerprint_mtime(value: str) -> float:
    """The modification time (seconds since the epoch) a ``fingerprint`` was taken at."""
    return int(value.rsplit(":", 1)[1]) / 1e9


@dataclasses.dataclass(frozen=True)
class Copied:
    sha256: str
    size: int


def copy_hashing(source: BinaryIO, destination: BinaryIO) -> Copied:
    """Copy a stream, hashing it on the way: one pass over the bytes."""
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: source.read(_CHUNK), b""):
        digest.update(chunk)
        destination.write(chunk)
        size += len(chunk)
    return Copied(digest.hexdigest(), size)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as src:
        return hashlib.file_digest(src, "sha256").hexdigest()


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A temp file beside ``target`` that replaces it when the block ends without an
    error, and is removed in every case. A check that must come just before the swap
    (a conditional write) goes at the end of the block and raises to call it off."""
    temp = target.with_name(temp_name(target.name))
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    with replacing(target) as temp:
        temp.write_bytes(data)


def write_json_atomically(path: Path, payload: dict[str, object]) -> None:
    write_atomically(path, json.dumps(payload).encode("utf-8"))
