"""One package file's metadata record, computed once (at upload, or by the first instance
that meets a file without one) and kept in the bucket beside the file:

    <prefix>/<filename>                      the package file
    <prefix>/.gcs_sync/records/<filename>     its record (this module's JSON)
    <prefix>/.gcs_sync/metadata/<filename>    its core metadata file (PEP 658), if any

Named as the file, without a suffix: a file name may take the 255 characters a folder
allows (names.MAX_NAME_LENGTH), so its record's name can't be longer.

Every instance serves the simple API's fields from records alone (PEP 691/700/592/658),
never by opening a package. A record names the sha256 of the file it describes: a record
whose sha256 is not the file's is stale (left by an earlier file of that name) and is
computed again.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import operator
import sys
from typing import Any, Optional

from gcs_sync.names import is_package_filename

RECORDS_FOLDER = ".gcs_sync/records/"
METADATA_FOLDER = ".gcs_sync/metadata/"
METADATA_SUFFIX = ".metadata"  # PEP 658: the core metadata file is served at <file URL>.metadata
RECORD_FORMAT = 1
# A record is small; anything larger in the bucket is not one of ours.
MAX_RECORD_BYTES = 64 * 1024


def upload_time(epoch_seconds: float) -> str:
    """An upload time as PEP 700 writes it: ISO 8601 in UTC with microseconds and a Z."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RecordError(ValueError):
    """A record object that cannot be read (not JSON, another format, a field of the wrong
    type); names the object."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"record {name!r}: {problem}")


def record_object(filename: str) -> str:
    """The record's object name, relative to the prefix."""
    return RECORDS_FOLDER + filename


def metadata_object(filename: str) -> str:
    """The core metadata file's object name, relative to the prefix."""
    return METADATA_FOLDER + filename


def filename_of_record(object_name: str) -> Optional[str]:
    """The package filename a record object (as ``list_notes`` names it) describes; None
    for anything else in the records folder."""
    if not object_name.startswith(RECORDS_FOLDER):
        return None
    filename = object_name[len(RECORDS_FOLDER):]
    return filename if is_package_filename(filename) else None


@dataclasses.dataclass(frozen=True, slots=True)  # slots: one per file in every worker's memory
class FileRecord:
    filename: str
    size: int
    sha256: str  # of the package file this record describes
    upload_time: str  # RFC 3339 in UTC, as PEP 700 writes it (``upload_time()``)
    uploader: Optional[str] = None  # the htpasswd user; None if another tool put the file there
    requires_python: Optional[str] = None
    # The core metadata file's sha256 (PEP 658/714); None if there is none, and why.
    metadata_sha256: Optional[str] = None
    metadata_problem: Optional[str] = None
    yanked: bool = False
    yank_reason: Optional[str] = None  # PEP 592: the reason, if one was given

    def with_yank(self, yanked: bool, reason: Optional[str] = None) -> "FileRecord":
        return dataclasses.replace(self, yanked=yanked, yank_reason=reason if yanked else None)

    def fields(self) -> tuple[Any, ...]:
        """Its fields in order: what ``FileRecord(*fields)`` makes again (spelled out, not
        dataclasses.astuple: a state written or packed makes one per file)."""
        return (self.filename, self.size, self.sha256, self.upload_time, self.uploader, self.requires_python,
                self.metadata_sha256, self.metadata_problem, self.yanked, self.yank_reason)

    def to_json(self) -> dict[str, Any]:
        # Spelled out, not dataclasses.asdict: a cold start writes one per file.
        return {
            "format": RECORD_FORMAT, "filename": self.filename, "size": self.size, "sha256": self.sha256,
            "upload_time": self.upload_time, "uploader": self.uploader, "requires_python": self.requires_python,
            "metadata_sha256": self.metadata_sha256, "metadata_problem": self.metadata_problem,
            "yanked": self.yanked, "yank_reason": self.yank_reason,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: Any, name: str = "record") -> "FileRecord":
        """Raises RecordError naming ``name`` if ``raw`` is not a record of this format."""
        # Every state entry holds one, so this runs 50,000 times in a cold start: the
        # usual shape (every field present, each of an allowed type) is checked in C.
        usual = usual_record_fields(raw)
        if usual is not None:
            return cls(*usual)
        if not isinstance(raw, dict):
            raise RecordError(name, "not a JSON object")
        if type(raw.get("format")) is not int or raw.get("format") != RECORD_FORMAT:  # (True == 1)
            raise RecordError(name, f"format {raw.get('format')!r}, not {RECORD_FORMAT}")
        # Any other shape: one pass over the known fields, naming the first one wrong.
        fields: dict[str, Any] = {}
        for key, kind in _TYPES.items():
            value: Any = raw.get(key)
            if value is None:
                if key in _REQUIRED:
                    raise RecordError(name, f"{key} is missing")
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                what = "a boolean, not a number" if kind is int and isinstance(value, bool) else \
                    f"{type(value).__name__}, not {kind.__name__}"
                raise RecordError(name, f"{key} is {what}")
            fields[key] = sys.intern(value) if key in _FEW_VALUES and isinstance(value, str) else value
        return cls(**fields)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "record") -> "FileRecord":
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(name, f"{len(data)} bytes, more than a record's {MAX_RECORD_BYTES}")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordError(name, f"not JSON ({exc})") from exc
        return cls.from_json(raw, name)


_REQUIRED = ("filename", "size", "sha256", "upload_time")
# Fields with few distinct values across a repository (interned when read).
_FEW_VALUES = ("uploader", "requires_python", "metadata_problem", "yank_reason")
_TYPES: dict[str, type] = {
    "filename": str, "size": int, "sha256": str, "upload_time": str, "uploader": str,
    "requires_python": str, "metadata_sha256": str, "metadata_problem": str,
    "yanked": bool, "yank_reason": str,
}
_OPTIONAL_STRINGS = ("uploader", "requires_python", "metadata_sha256", "metadata_problem", "yank_reason")
# The format, then the fields in FileRecord's order, and the types each may have in a
# record written here (every field present, None where unknown).
_FIELD_ORDER = tuple(field.name for field in dataclasses.fields(FileRecord))
_read_fields = operator.itemgetter("format", *_FIELD_ORDER)
_USUAL_SHAPES = frozenset(itertools.product(
    (int,), *[(str, type(None)) if key in _OPTIONAL_STRINGS else (_TYPES[key],) for key in _FIELD_ORDER]))


def usual_record_fields(raw: Any, filename: Optional[str] = None) -> Optional[tuple[Any, ...]]:
    """``FileRecord``'s arguments, in order, from a record of the usual shape (format 1,
    every field present, each of a type ``from_json`` takes; the strings with few distinct
    values interned), so ``FileRecord(*fields)`` cannot fail; None for any other shape
    (which ``from_json`` reads, or refuses, field by field). ``filename``, if the record's
    is equal, is used in its place: one string for a state entry's key and its record."""
    try:
        values = _read_fields(raw)
    except (KeyError, TypeError):  # a field missing, or not an object
        return None
    if values[0] != RECORD_FORMAT or tuple(map(type, values)) not in _USUAL_SHAPES:  # (the shape says int, not True)
        return None
    name = values[1]
    return record_fields(filename if filename is not None and name == filename else name, *values[2:])


def record_fields(filename: str, size: int, sha256: str, upload_time: str, uploader: Optional[str],
                  requires_python: Optional[str], metadata_sha256: Optional[str], metadata_problem: Optional[str],
                  yanked: bool, yank_reason: Optional[str]) -> tuple[Any, ...]:
    """``FileRecord``'s arguments from values of checked types, the strings with few
    distinct values interned (one string each across a repository's records)."""
    return (filename, size, sha256, upload_time, uploader and sys.intern(uploader),
            requires_python and sys.intern(requires_python), metadata_sha256,
            metadata_problem and sys.intern(metadata_problem), yanked, yank_reason and sys.intern(yank_reason))
