"""Read the core metadata (METADATA, PKG-INFO) of one package file, and check that the file
is what its name says.

A package file is untrusted input: an upload, or an object another tool put in the bucket.
So nothing is extracted to disk, and every cost is bounded before it is paid:

- the core metadata file is refused above ``MAX_METADATA_BYTES``, by its declared size and
  again while decompressing it (a declared size can lie: a zip bomb);
- a zip's entry count is read from its End Of Central Directory record (zip64 too) and its
  central directory is walked, both before ``zipfile`` builds its member list, so a crafted
  zip with millions of entries costs neither memory nor time;
- a tarball is read as a stream, never keeping its member list, with at most
  ``MAX_ARCHIVE_MEMBERS`` members and ``MAX_SCANNED_BYTES`` decompressed bytes, so a gzip
  bomb stops early. Every member is checked (absolute names, ``..``, links that leave the
  archive, device files), so the whole archive is scanned, within those bounds.

Whatever goes wrong is a ``DistributionError`` naming the file and the problem: its text is
what a client sees in the 400 that refuses an upload.
"""

from __future__ import annotations

import bz2
import dataclasses
import email.parser
import gzip
import hashlib
import io
import lzma
import posixpath
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO, Optional

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from pypiserver.pkg_helpers import guess_pkgname_and_version

MAX_METADATA_BYTES = 1024 * 1024  # a core metadata file larger than this is refused
MAX_ARCHIVE_MEMBERS = 100_000  # zip central directory entries / tar members scanned
MAX_SCANNED_BYTES = 512 * 1024 * 1024  # decompressed bytes read from a tarball before giving up

WHEEL_SUFFIX = ".whl"
EGG_SUFFIX = ".egg"
ZIP_SDIST_SUFFIX = ".zip"
# Each tarball suffix and the module that decompresses it (None: a plain tar).
TAR_SUFFIXES: dict[str, Optional[str]] = {
    ".tar.gz": "gzip", ".tgz": "gzip",
    ".tar.bz2": "bz2", ".tbz": "bz2",
    ".tar.xz": "xz", ".txz": "xz",
    ".tar": None,
}

# What the standard library raises on a corrupt, truncated or hostile archive. OSError
# covers gzip.BadGzipFile and bz2's errors; ValueError and struct.error come from bad
# offsets and short records; NotImplementedError from unknown compression methods.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, lzma.LZMAError,
    EOFError, OSError, struct.error, ValueError, NotImplementedError,
)

# Zip record layouts (APPNOTE.TXT 4.3.12, 4.3.14-16).
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_CENTRAL_ENTRY = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_ENTRY_SIGNATURE = b"PK\x01\x02"
_MAX_ZIP_COMMENT = 0xFFFF


class DistributionError(ValueError):
    """A package file that cannot be what its name says: names the file and the problem.
    Its str() is the sentence a client sees in a 400 (e.g. "demo-2.0-py3-none-any.whl: the
    file name says demo 2.0 but its METADATA says demo 1.0")."""

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"{filename}: {problem}")


@dataclasses.dataclass(frozen=True)
class CoreMetadata:
    data: bytes  # the METADATA / PKG-INFO bytes exactly as in the archive
    sha256: str  # hex sha256 of data
    name: str  # the Name header
    version: str  # the Version header
    requires_python: Optional[str]  # the Requires-Python header, stripped; None if absent/empty
    # True only for wheels: the file PEP 658 serves (an sdist's PKG-INFO may lack dependencies).
    servable: bool


def read_core_metadata(path: Path, filename: str) -> Optional[CoreMetadata]:
    """The core metadata of the package file at ``path`` named ``filename``.
    None for kinds that carry none we read (.exe, .msi, .rpm, .dmg, .deb, anything not a
    wheel, sdist or egg). Raises DistributionError for bad input."""
    lower = filename.lower()
    if lower.endswith(WHEEL_SUFFIX):
        name, version = _wheel_name(filename)
        data = _read_zip_member(path, filename, _wheel_candidate, "METADATA")
        return _parse(data, filename, name, version, "METADATA", servable=True)
    if lower.endswith(EGG_SUFFIX):
        name, version = _legacy_name(filename, filename)
        data = _read_zip_member(path, filename, _egg_candidate, "EGG-INFO/PKG-INFO")
        return _parse(data, filename, name, version, "PKG-INFO", servable=False)
    if lower.endswith(ZIP_SDIST_SUFFIX):
        name, version = _sdist_name(filename, ZIP_SDIST_SUFFIX)
        data = _read_zip_member(path, filename, _sdist_candidate, "PKG-INFO")
        return _parse(data, filename, name, version, "PKG-INFO", servable=False)
    for suffix, compression in TAR_SUFFIXES.items():
        if lower.endswith(suffix):
            name, version = _sdist_name(filename, suffix)
            data = _read_tar_pkg_info(path, filename, compression)
            return _parse(data, filename, name, version, "PKG-INFO", servable=False)
    return None


# --- file names ---------------------------------------------------------------------------

def _wheel_name(filename: str) -> tuple[str, str]:
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise DistributionError(filename, f"not a valid wheel file name ({exc})") from exc
    return name, str(version)


def _sdist_name(filename: str, suffix: str) -> tuple[str, str]:
    # Both parsers know .tar.gz; the other suffixes (.tbz, .txz, .tar) name the same thing.
    as_tar_gz = filename[:-len(suffix)] + ".tar.gz"
    try:
        name, version = parse_sdist_filename(as_tar_gz)
    except (InvalidSdistFilename, InvalidVersion):
        # A legacy name (a version PEP 440 does not parse): pypiserver's own split.
        return _legacy_name(as_tar_gz, filename)
    return name, str(version)


def _legacy_name(parsed: str, filename: str) -> tuple[str, str]:
    guessed = guess_pkgname_and_version(parsed)
    if guessed is None or not guessed[0] or not guessed[1]:
        raise DistributionError(filename, "the file name has no project name and version")
    return guessed[0], guessed[1]


# --- member names ---------------------------------------------------------------------------

def _parts(member: str) -> list[str]:
    """A member name's components; backslashes count as separators (Windows extractors)."""
    return [part for part in member.replace("\\", "/").split("/") if part not in ("", ".")]


def _unsafe_name(member: str) -> Optional[str]:
    """Why ``member`` may not be in an archive we accept; None if it may."""
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[0].isalpha() and member[1] == ":"):
        return f"the member {member!r} has an absolute path"
    if ".." in _parts(member):
        return f"the member {member!r} has a '..' component"
    return None


def _wheel_candidate(member: str) -> bool:
    parts = member.split("/")
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"


def _egg_candidate(member: str) -> bool:
    return member == "EGG-INFO/PKG-INFO"


def _sdist_candidate(member: str) -> bool:
    parts = _parts(member)  # tarballs often name members "./demo-1.0/PKG-INFO"
    return len(parts) == 2 and parts[1] == "PKG-INFO"


# --- zip ------------------------------------------------------------------------------------

def _read_zip_member(path: Path, filename: str, is_candidate: Callable[[str], bool], wanted: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            _check_zip_directory(fh, filename)
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_ARCHIVE_MEMBERS:  # _check_zip_directory counted; belt and braces
                    raise DistributionError(filename, f"more than {MAX_ARCHIVE_MEMBERS} members")
                for info in infos:
                    problem = _unsafe_name(info.filename)
                    if problem:
                        raise DistributionError(filename, problem)
                candidates = [info for info in infos if is_candidate(info.filename)]
                if not candidates:
                    raise DistributionError(filename, f"no {wanted} in the archive")
                if len(candidates) > 1:
                    names = ", ".join(sorted(info.filename for info in candidates)[:5])
                    raise DistributionError(filename, f"more than one {wanted} ({names})")
                info = candidates[0]
                if info.flag_bits & 0x1:
                    raise DistributionError(filename, f"{info.filename} is encrypted")
                _check_size(filename, info.filename, info.file_size)
                with zf.open(info) as member:
                    # zipfile stops at the declared size and then checks the CRC (a zip
                    # bomb that declares a small size fails there); the bounded read does
                    # not rely on that.
                    return _read_bounded(member, filename, info.filename)
    except DistributionError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DistributionError(filename, f"not a readable zip archive ({exc})") from exc


def _check_zip_directory(fh: BinaryIO, filename: str) -> None:
    """Refuse a zip whose central directory holds more than MAX_ARCHIVE_MEMBERS entries,
    reading only its end records and walking the directory's fixed-size headers, before
    zipfile parses it into objects. Finds the records as zipfile does (_EndRecData)."""
    size = fh.seek(0, 2)
    if size < _EOCD.size:
        raise DistributionError(filename, "not a zip archive (too short)")
    tail_length = min(size, _EOCD.size + _MAX_ZIP_COMMENT)
    fh.seek(size - tail_length)
    tail = fh.read(tail_length)
    if tail[-_EOCD.size:].startswith(_EOCD_SIGNATURE) and tail[-2:] == b"\0\0":
        at = len(tail) - _EOCD.size
    else:
        at = tail.rfind(_EOCD_SIGNATURE, 0, len(tail) - _EOCD.size + 1)
        if at < 0:
            raise DistributionError(filename, "not a zip archive (no end of central directory)")
    _sig, _disk, _cd_disk, disk_entries, entries, cd_size, _cd_offset, _comment = _EOCD.unpack_from(tail, at)
    record_at = size - tail_length + at  # where the directory ends
    zip64_locator_at = record_at - _ZIP64_LOCATOR.size
    if zip64_locator_at >= 0:
        fh.seek(zip64_locator_at)
        locator = fh.read(_ZIP64_LOCATOR.size)
        if locator.startswith(_ZIP64_LOCATOR_SIGNATURE):
            zip64_at = zip64_locator_at - _ZIP64_EOCD.size
            if zip64_at < 0:
                raise DistributionError(filename, "a truncated zip64 end of central directory")
            fh.seek(zip64_at)
            record = fh.read(_ZIP64_EOCD.size)
            if record.startswith(_ZIP64_EOCD_SIGNATURE):
                fields = _ZIP64_EOCD.unpack(record)
                disk_entries, entries, cd_size = fields[6], fields[7], fields[8]
                record_at = zip64_at
    if max(entries, disk_entries) > MAX_ARCHIVE_MEMBERS:
        raise DistributionError(
            filename, f"its directory lists {max(entries, disk_entries)} members, "
            f"more than {MAX_ARCHIVE_MEMBERS}")
    cd_start = record_at - cd_size
    if cd_start < 0:
        raise DistributionError(filename, "a corrupt zip archive (bad central directory size)")
    # The declared count can lie; count the entries zipfile would parse (it reads cd_size
    # bytes ending at the end record, whatever the declared offset says).
    fh.seek(cd_start)
    walked = count = 0
    while walked < cd_size:
        header = fh.read(_CENTRAL_ENTRY.size)
        if len(header) != _CENTRAL_ENTRY.size or not header.startswith(_CENTRAL_ENTRY_SIGNATURE):
            raise DistributionError(filename, "a corrupt zip archive (bad central directory)")
        fields = _CENTRAL_ENTRY.unpack(header)
        name_length, extra_length, comment_length = fields[12], fields[13], fields[14]
        skip = name_length + extra_length + comment_length
        fh.seek(skip, 1)
        walked += _CENTRAL_ENTRY.size + skip
        count += 1
        if count > MAX_ARCHIVE_MEMBERS:
            raise DistributionError(filename, f"more than {MAX_ARCHIVE_MEMBERS} members")
    fh.seek(0)


# --- tar ------------------------------------------------------------------------------------

class _ScanBudgetExceeded(Exception):
    """Raised by _BoundedReader; never a tarfile or OSError, so nothing in between eats it."""


class _BoundedReader:
    """A read-only file object that raises once more than ``limit`` bytes were read."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self._raw = raw
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._left + 1:
            size = self._left + 1
        data = self._raw.read(size)
        self._left -= len(data)
        if self._left < 0:
            raise _ScanBudgetExceeded()
        return data


class _HeaderTooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header's whole body into memory; refuse a large
    one first. (The hook is private, but the same from Python 3.2 to 3.13.)"""

    _LONG_HEADERS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                     tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._LONG_HEADERS and self.size > MAX_METADATA_BYTES:
            raise _HeaderTooLarge(self.size)
        return tarfile.TarInfo._proc_member(self, tf)  # type: ignore[attr-defined]


def _open_decompressed(raw: io.BufferedReader, compression: Optional[str]) -> io.BufferedIOBase:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")
    if compression == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _read_tar_pkg_info(path: Path, filename: str, compression: Optional[str]) -> bytes:
    found: Optional[bytes] = None
    found_name = ""
    try:
        with open(path, "rb") as raw, _open_decompressed(raw, compression) as stream:
            bounded = _BoundedReader(stream, MAX_SCANNED_BYTES)
            # Stream mode: one pass, no seeking back; tarfile.members is cleared as we go.
            # (The ignore: typeshed wants an IO[bytes]; stream mode only calls read().)
            with tarfile.open(fileobj=bounded, mode="r|", tarinfo=_BoundedTarInfo) as tf:  # type: ignore[call-overload]
                count = 0
                while True:
                    member = tf.next()
                    if member is None:
                        break
                    tf.members.clear()
                    count += 1
                    if count > MAX_ARCHIVE_MEMBERS:
                        raise DistributionError(filename, f"more than {MAX_ARCHIVE_MEMBERS} members")
                    _check_tar_member(member, filename)
                    if not _sdist_candidate(member.name):
                        continue
                    if found is not None:
                        raise DistributionError(
                            filename, f"more than one PKG-INFO ({found_name}, {member.name})")
                    if not member.isreg():
                        raise DistributionError(filename, f"{member.name} is not a regular file")
                    _check_size(filename, member.name, member.size)
                    extracted = tf.extractfile(member)
                    if extracted is None:  # only for non-files, excluded above
                        raise DistributionError(filename, f"{member.name} cannot be read")
                    found, found_name = _read_bounded(extracted, filename, member.name), member.name
    except DistributionError:
        raise
    except _ScanBudgetExceeded as exc:
        raise DistributionError(
            filename, f"more than {MAX_SCANNED_BYTES} bytes once decompressed") from exc
    except _HeaderTooLarge as exc:
        raise DistributionError(
            filename, f"a tar extended header of {exc.size} bytes, more than {MAX_METADATA_BYTES}") from exc
    except _ARCHIVE_ERRORS as exc:
        raise DistributionError(filename, f"not a readable tar archive ({exc})") from exc
    if found is None:
        raise DistributionError(filename, "no PKG-INFO in the archive")
    return found


def _check_tar_member(member: tarfile.TarInfo, filename: str) -> None:
    problem = _unsafe_name(member.name)
    if problem:
        raise DistributionError(filename, problem)
    if member.ischr() or member.isblk() or member.isfifo():
        raise DistributionError(filename, f"the member {member.name!r} is a device file")
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():  # relative to the link's folder; a hard link's to the archive root
            target = posixpath.join(posixpath.dirname(member.name), target)
        if (
            member.linkname.startswith(("/", "\\"))
            or posixpath.normpath(target.replace("\\", "/")).split("/")[0] == ".."
        ):
            raise DistributionError(
                filename, f"the member {member.name!r} links outside the archive ({member.linkname!r})")


# --- metadata -------------------------------------------------------------------------------

def _check_size(filename: str, member: str, size: int) -> None:
    if size > MAX_METADATA_BYTES:
        raise DistributionError(filename, f"{member} is {size} bytes, more than {MAX_METADATA_BYTES}")


def _read_bounded(stream: IO[bytes], filename: str, member: str) -> bytes:
    data = stream.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise DistributionError(filename, f"{member} is more than {MAX_METADATA_BYTES} bytes")
    return data


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _parse(data: bytes, filename: str, name: str, version: str, kind: str, servable: bool) -> CoreMetadata:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DistributionError(filename, f"its {kind} is not UTF-8 ({exc})") from exc
    headers = email.parser.HeaderParser().parsestr(text)
    values: dict[str, str] = {}
    for header in ("Name", "Version"):
        found = [str(value).strip() for value in headers.get_all(header, [])]
        if not found or not found[0]:
            raise DistributionError(filename, f"its {kind} has no {header}")
        if len(found) > 1:
            raise DistributionError(filename, f"its {kind} has more than one {header}")
        values[header] = found[0]
    meta_name, meta_version = values["Name"], values["Version"]
    if canonicalize_name(meta_name) != canonicalize_name(name) or not _same_version(meta_version, version):
        raise DistributionError(
            filename, f"the file name says {name} {version} but its {kind} says {meta_name} {meta_version}")
    requires_python = str(headers.get("Requires-Python", "")).strip() or None
    return CoreMetadata(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        name=meta_name,
        version=meta_version,
        requires_python=requires_python,
        servable=servable,
    )

