"""A package file's record, computed from its bytes (once: at upload, or by the first
instance or command that meets a file without one)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from gcs_sync.records.extract import DistributionError, read_core_metadata
from gcs_sync.names import MAX_NAME_LENGTH
from gcs_sync.records.record import METADATA_SUFFIX, FileRecord

log = logging.getLogger("gcs_sync.records")


def compute_record(
    path: Path, filename: str, *, sha256: str, size: int, upload_time: str, uploader: Optional[str],
) -> tuple[FileRecord, Optional[bytes]]:
    """The record of the package file at ``path`` and its core metadata file (PEP 658: a
    wheel's METADATA; None for other kinds). Raises DistributionError (a ValueError naming
    the file) for a file that is not what its name says: an upload refuses it with a 400."""
    core = read_core_metadata(path, filename)
    problem = None if core is not None else "no core metadata is read from this kind of file"
    servable = core is not None and core.servable
    if servable and len(filename) + len(METADATA_SUFFIX) > MAX_NAME_LENGTH:
        # Served as <file>.metadata, a name no folder could hold: the file is served alone.
        servable, problem = False, f"the name is too long for a core metadata file ({MAX_NAME_LENGTH} characters)"
    record = FileRecord(
        filename=filename, size=size, sha256=sha256, upload_time=upload_time, uploader=uploader,
        requires_python=None if core is None else core.requires_python,
        metadata_sha256=core.sha256 if core is not None and servable else None,
        metadata_problem=problem,
    )
    return record, core.data if core is not None and servable else None


def compute_record_or_note_problem(
    path: Path, filename: str, *, sha256: str, size: int, upload_time: str,
) -> tuple[FileRecord, Optional[bytes], Optional[str]]:
    """As ``compute_record``, for a file already in the bucket (put there by another tool)
    or pushed: one that cannot be read gets a record without metadata that says why
    (logged, and returned third: None for a good file), so it is looked at once, not at
    every sync; the file itself is still served."""
    try:
        record, metadata = compute_record(path, filename, sha256=sha256, size=size, upload_time=upload_time,
                                          uploader=None)
        return record, metadata, None
    except DistributionError as exc:
        log.warning("%s has no usable core metadata, so it is served without any: %s", filename, exc)
        return FileRecord(filename=filename, size=size, sha256=sha256, upload_time=upload_time,
                          metadata_problem=str(exc)), None, str(exc)
