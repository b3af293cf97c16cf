"""gcs_sync.records.extract: the core metadata of real archives built here, and the refusal,
with a sentence naming the file, of everything that is not what its name says or that would
cost unbounded memory or time."""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest

from gcs_sync.records import extract
from gcs_sync.records.extract import CoreMetadata, DistributionError, read_core_metadata
from testkit.packages import make_wheel


def metadata(name: str = "demo", version: str = "1.0", extra: str = "") -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{extra}".encode()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_mode(filename: str) -> str:
    for suffix, mode in ((".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.bz2", "w:bz2"),
                         (".tbz", "w:bz2"), (".tar.xz", "w:xz"), (".txz", "w:xz"), (".tar", "w")):
        if filename.endswith(suffix):
            return mode
    raise AssertionError(filename)


def make_tar(path: Path, members: Sequence[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, tar_mode(path.name), format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def make_sdist(path: Path, pkg_info: bytes, top: Optional[str] = None) -> Path:
    top = top or path.name.split(".tar")[0].split(".zip")[0].rsplit(".t", 1)[0]
    members = {f"{top}/setup.py": b"", f"{top}/PKG-INFO": pkg_info, f"{top}/demo/__init__.py": b""}
    if path.name.endswith(".zip"):
        return make_zip(path, members)
    return make_tar(path, list(members.items()))


def refused(path: Path, filename: Optional[str] = None) -> str:
    with pytest.raises(DistributionError) as caught:
        read_core_metadata(path, filename or path.name)
    error = caught.value
    assert error.filename == (filename or path.name)
    assert str(error) == f"{error.filename}: {error.problem}"
    return str(error)


# --- good files -----------------------------------------------------------------------------

def test_wheel_from_make_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "Demo-Pkg", "1.0")
    got = read_core_metadata(wheel, wheel.name)
    with zipfile.ZipFile(wheel) as zf:
        expected = zf.read("demo_pkg-1.0.dist-info/METADATA")
    assert got == CoreMetadata(
        data=expected, sha256=hashlib.sha256(expected).hexdigest(), name="Demo-Pkg",
        version="1.0", requires_python=None, servable=True)


def test_wheel_requires_python(tmp_path: Path) -> None:
    wheel = make_zip(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": b"",
        "demo-1.0.dist-info/METADATA": metadata(extra="Requires-Python:  >=3.8, <4 \n\nA description.\n"),
    })
    got = read_core_metadata(wheel, wheel.name)
    assert got is not None and got.requires_python == ">=3.8, <4"


@pytest.mark.parametrize("filename", [
    "demo-1.0.tar.gz", "demo-1.0.zip", "demo-1.0.tar.bz2", "demo-1.0.tgz", "demo-1.0.tbz",
    "demo-1.0.tar.xz", "demo-1.0.txz", "demo-1.0.tar",
])
def test_sdists(tmp_path: Path, filename: str) -> None:
    pkg_info = metadata(extra="Requires-Python: >=3.9\n")
    got = read_core_metadata(make_sdist(tmp_path / filename, pkg_info, top="demo-1.0"), filename)
    assert got is not None
    assert (got.name, got.version, got.requires_python, got.data) == ("demo", "1.0", ">=3.9", pkg_info)
    assert got.servable is False  # an sdist's PKG-INFO is not served as PEP 658 metadata


def test_sdist_members_named_with_dot_slash(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [("./demo-1.0/PKG-INFO", metadata())])
    assert read_core_metadata(path, path.name) is not None


def test_egg(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "demo-1.0-py3.11.egg", {
        "EGG-INFO/PKG-INFO": metadata(), "demo/__init__.py": b""})
    got = read_core_metadata(path, path.name)
    assert got is not None and (got.name, got.version, got.servable) == ("demo", "1.0", False)


@pytest.mark.parametrize("filename", ["my-pkg-1.0.tar.gz", "my-pkg-1.0.tar.bz2", "my_pkg-1.0.zip"])
def test_legacy_sdist_name_with_hyphen(tmp_path: Path, filename: str) -> None:
    got = read_core_metadata(make_sdist(tmp_path / filename, metadata("my-pkg"), top="my-pkg-1.0"), filename)
    assert got is not None and got.name == "my-pkg"


@pytest.mark.parametrize("file_version, metadata_version", [("1.0", "1.0.0"), ("1.0.0", "1.0"), ("1.0", "1.0")])
def test_equal_versions_agree(tmp_path: Path, file_version: str, metadata_version: str) -> None:
    path = make_zip(tmp_path / f"demo-{file_version}-py3-none-any.whl", {
        f"demo-{file_version}.dist-info/METADATA": metadata(version=metadata_version)})
    got = read_core_metadata(path, path.name)
    assert got is not None and got.version == metadata_version


@pytest.mark.parametrize("filename", ["demo-1.0.exe", "demo-1.0.win-amd64.msi", "demo-1.0-1.noarch.rpm",
                                      "demo-1.0.dmg", "demo_1.0_all.deb", "README.txt"])
def test_other_kinds_have_none(tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_bytes(os.urandom(100))
    assert read_core_metadata(path, filename) is None


# --- not what the name says -----------------------------------------------------------------

@pytest.mark.parametrize("filename, members, message", [
    ("demo-2.0-py3-none-any.whl", {"demo-2.0.dist-info/METADATA": metadata("demo", "1.0")},
     "demo-2.0-py3-none-any.whl: the file name says demo 2.0 but its METADATA says demo 1.0"),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": metadata("other", "1.0")},
     "demo-1.0-py3-none-any.whl: the file name says demo 1.0 but its METADATA says other 1.0"),
    ("demo-1.0.zip", {"demo-1.0/PKG-INFO": metadata("demo", "1.1")},
     "demo-1.0.zip: the file name says demo 1.0 but its PKG-INFO says demo 1.1"),
    ("demo-1.0-py3-none-any.whl", {"demo/__init__.py": b""},
     "demo-1.0-py3-none-any.whl: no METADATA in the archive"),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": metadata(),
                                   "other-1.0.dist-info/METADATA": metadata()},
     ("demo-1.0-py3-none-any.whl: more than one METADATA "
      "(demo-1.0.dist-info/METADATA, other-1.0.dist-info/METADATA)")),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": b"Name: demo\nVersion: \xff1.0\n"},
     None),  # not UTF-8
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\n"},
     "demo-1.0-py3-none-any.whl: its METADATA has no Version"),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nVersion: 1.0\n"},
     "demo-1.0-py3-none-any.whl: its METADATA has no Name"),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": metadata() + b"Name: other\n"},
     "demo-1.0-py3-none-any.whl: its METADATA has more than one Name"),
    ("demo-1.0.zip", {"demo-1.0/setup.py": b""}, "demo-1.0.zip: no PKG-INFO in the archive"),
    ("demo-1.0-py3.11.egg", {"demo-1.0/PKG-INFO": metadata()},
     "demo-1.0-py3.11.egg: no EGG-INFO/PKG-INFO in the archive"),
    ("demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": metadata(), "../evil": b""},
     "demo-1.0-py3-none-any.whl: the member '../evil' has a '..' component"),
])
def test_zip_contents_refused(tmp_path: Path, filename: str, members: dict[str, bytes],
                              message: Optional[str]) -> None:
    path = make_zip(tmp_path / filename, members)
    text = refused(path)
    if message is not None:
        assert text == message
    else:
        assert "not UTF-8" in text


def test_zip_absolute_member_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", metadata())
        info = zipfile.ZipInfo("x" * 9)
        zf.writestr(info, b"")
    # zipfile strips a leading "/" when it writes, so write "x..." and patch the name.
    path.write_bytes(path.read_bytes().replace(b"x" * 9, b"/etc/evil"))
    assert "has an absolute path" in refused(path)


@pytest.mark.parametrize("filename", ["demo.whl", "demo-1.0.whl", "demo-x!y-py3-none-any.whl"])
def test_bad_wheel_file_name(tmp_path: Path, filename: str) -> None:
    path = make_zip(tmp_path / "any.zip", {"demo-1.0.dist-info/METADATA": metadata()})
    assert "not a valid wheel file name" in refused(path, filename)


# --- not an archive, corrupt, truncated -------------------------------------------------------

@pytest.mark.parametrize("filename", [
    "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-1.0.zip", "demo-1.0.tar.bz2",
    "demo-1.0.tar.xz", "demo-1.0.tar", "demo-1.0-py3.11.egg",
])
def test_random_bytes_refused(tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_bytes(os.urandom(4096))
    text = refused(path)
    assert "not a zip archive" in text or "not a readable" in text or "no PKG-INFO" in text


def test_empty_file_refused(tmp_path: Path) -> None:
    for filename in ("demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"):
        path = tmp_path / filename
        path.write_bytes(b"")
        refused(path)


def test_truncated_zip_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    data = wheel.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        wheel.write_bytes(data[:cut])
        refused(wheel)


def test_truncated_tarball_refused(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [("demo-1.0/big", os.urandom(200_000)),
                                                   ("demo-1.0/PKG-INFO", metadata())])
    path.write_bytes(path.read_bytes()[:100_000])
    assert "not a readable tar archive" in refused(path)


def test_plain_tar_named_tar_gz_refused(tmp_path: Path) -> None:
    plain = make_tar(tmp_path / "demo-1.0.tar", [("demo-1.0/PKG-INFO", metadata())])
    path = tmp_path / "demo-1.0.tar.gz"
    plain.rename(path)
    assert "not a readable tar archive" in refused(path)


# --- bounds ---------------------------------------------------------------------------------

def test_zip_bomb_with_small_declared_size_refused(tmp_path: Path) -> None:
    """METADATA declares 100 bytes but inflates to 50 MB of zeros: zipfile stops at the
    declared size, and the CRC check refuses it, without inflating the rest."""
    path = make_zip(tmp_path / "demo-1.0-py3-none-any.whl",
                    {"demo-1.0.dist-info/METADATA": metadata() + b"\0" * (50 * 1024 * 1024)})
    data = bytearray(path.read_bytes())
    real_size = struct.pack("<L", len(metadata()) + 50 * 1024 * 1024)
    patched = data.replace(real_size, struct.pack("<L", 100))  # local header and directory
    assert patched != data
    path.write_bytes(bytes(patched))
    assert "not a readable zip archive" in refused(path)


def test_zip_bomb_with_large_declared_size_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "demo-1.0-py3-none-any.whl",
                    {"demo-1.0.dist-info/METADATA": metadata() + b"\0" * (50 * 1024 * 1024)})
    assert "more than 1048576" in refused(path)


def test_zip_declaring_a_small_size_but_reading_more_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounded read refuses on its own: with the declared-size check switched off, a
    METADATA above the (lowered) limit is still refused while it is read."""
    path = make_zip(tmp_path / "demo-1.0-py3-none-any.whl",
                    {"demo-1.0.dist-info/METADATA": metadata() + b"x" * 5000})
    monkeypatch.setattr(extract, "_check_size", lambda *args: None)
    monkeypatch.setattr(extract, "MAX_METADATA_BYTES", 1000)
    assert "METADATA is more than 1000 bytes" in refused(path)


@pytest.mark.parametrize("filename", ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-1.0.zip"])
def test_metadata_of_2_mb_refused(tmp_path: Path, filename: str) -> None:
    big = metadata(extra="Description: " + "x" * (2 * 1024 * 1024) + "\n")
    if filename.endswith(".whl"):
        path = make_zip(tmp_path / filename, {"demo-1.0.dist-info/METADATA": big})
    else:
        path = make_sdist(tmp_path / filename, big, top="demo-1.0")
    assert "more than 1048576" in refused(path)


def zip64_end_records(entries: int) -> bytes:
    """An empty archive's end records whose zip64 record claims ``entries`` members."""
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, 0, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return zip64 + locator + eocd


def test_zip64_directory_claiming_ten_million_entries_refused_before_zipfile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(zip64_end_records(10_000_000))

    def no_zipfile(*args: object, **kwargs: object) -> None:
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr(zipfile, "ZipFile", no_zipfile)
    assert refused(path) == (
        "demo-1.0-py3-none-any.whl: its directory lists 10000000 members, more than 100000")


def test_zip_directory_with_more_entries_than_declared_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The EOCD says 1 entry, the directory holds 10; the walk counts them (limit lowered
    to 5 to keep the archive small)."""
    monkeypatch.setattr(extract, "MAX_ARCHIVE_MEMBERS", 5)
    path = make_zip(tmp_path / "demo-1.0-py3-none-any.whl",
                    {f"demo/m{i}.py": b"" for i in range(10)} | {"demo-1.0.dist-info/METADATA": metadata()})
    data = path.read_bytes()
    at = data.rfind(b"PK\x05\x06")
    patched = data[:at + 8] + struct.pack("<2H", 1, 1) + data[at + 12:]
    path.write_bytes(patched)
    assert refused(path) == "demo-1.0-py3-none-any.whl: more than 5 members"


def test_zip_with_many_members_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "MAX_ARCHIVE_MEMBERS", 5)
    path = make_zip(tmp_path / "demo-1.0-py3-none-any.whl",
                    {f"demo/m{i}.py": b"" for i in range(10)} | {"demo-1.0.dist-info/METADATA": metadata()})
    assert refused(path) == "demo-1.0-py3-none-any.whl: its directory lists 11 members, more than 5"


def test_gzip_bomb_tarball_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MAX_SCANNED_BYTES lowered to 1 MB to keep the test fast: the tarball inflates to 5 MB.
    monkeypatch.setattr(extract, "MAX_SCANNED_BYTES", 1024 * 1024)
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [("demo-1.0/PKG-INFO", metadata()),
                                                   ("demo-1.0/zeros", b"\0" * (5 * 1024 * 1024))])
    assert path.stat().st_size < 100_000
    assert refused(path) == "demo-1.0.tar.gz: more than 1048576 bytes once decompressed"


def test_tarball_with_many_members_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract, "MAX_ARCHIVE_MEMBERS", 5)
    path = make_tar(tmp_path / "demo-1.0.tar.gz",
                    [("demo-1.0/PKG-INFO", metadata())] + [(f"demo-1.0/m{i}", b"") for i in range(10)])
    assert refused(path) == "demo-1.0.tar.gz: more than 5 members"


def test_tarball_with_huge_pax_header_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tarfile would read a pax header's whole body into memory; limit lowered to keep it small.
    monkeypatch.setattr(extract, "MAX_METADATA_BYTES", 1000)
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [("demo-1.0/PKG-INFO", metadata()),
                                                   ("demo-1.0/" + "x" * 5000, b"")])
    assert "a tar extended header of" in refused(path)


# --- hostile tar members --------------------------------------------------------------------

def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member, problem", [
    (("../evil", b""), "the member '../evil' has a '..' component"),
    (("demo-1.0/../../evil", b""), "has a '..' component"),
    (("/etc/evil", b""), "the member '/etc/evil' has an absolute path"),
    (link("demo-1.0/evil", "../../etc/passwd"), "links outside the archive"),
    (link("demo-1.0/evil", "/etc/passwd"), "links outside the archive"),
    (link("demo-1.0/evil", "../../etc/passwd", tarfile.LNKTYPE), "links outside the archive"),
    (link("demo-1.0/evil", "../outside", tarfile.LNKTYPE), "links outside the archive"),
    (device("demo-1.0/dev"), "is a device file"),
])
def test_hostile_tar_member_refused(tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes],
                                    problem: str) -> None:
    # PKG-INFO first: the whole archive is still scanned, so a later member refuses it.
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [("demo-1.0/PKG-INFO", metadata()), member])
    assert problem in refused(path)


def test_links_inside_the_archive_are_fine(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "demo-1.0.tar.gz", [
        ("demo-1.0/PKG-INFO", metadata()), ("demo-1.0/a/x", b""),
        link("demo-1.0/a/y", "x"), link("demo-1.0/b", "a/../a/x"), link("demo-1.0/c", "demo-1.0/a/x", tarfile.LNKTYPE),
    ])
    assert read_core_metadata(path, path.name) is not None


@pytest.mark.parametrize("members, problem", [
    ([link("demo-1.0/PKG-INFO", "setup.py"), ("demo-1.0/setup.py", b"")], "demo-1.0/PKG-INFO is not a regular file"),
    ([("a/PKG-INFO", metadata()), ("b/PKG-INFO", metadata())], "more than one PKG-INFO (a/PKG-INFO, b/PKG-INFO)"),
    ([("demo-1.0/sub/PKG-INFO", metadata())], "no PKG-INFO in the archive"),
    ([("demo-1.0/PKG-INFO", b"Metadata-Version: 2.1\nName: demo\n")], "its PKG-INFO has no Version"),
    ([("demo-1.0/PKG-INFO", b"Name: d\xe9mo\nVersion: 1.0\n")], "its PKG-INFO is not UTF-8"),
])
def test_tar_pkg_info_refused(tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]],
                              problem: str) -> None:
    assert problem in refused(make_tar(tmp_path / "demo-1.0.tar.gz", members))


# --- damaged files: a DistributionError or metadata, never anything else ---------------------

@pytest.mark.parametrize("filename", ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-1.0.tar", "demo-1.0.zip"])
def test_damaged_files_raise_only_distribution_error(tmp_path: Path, filename: str) -> None:
    if filename.endswith(".whl"):
        good = make_zip(tmp_path / filename, {"demo-1.0.dist-info/METADATA": metadata(), "demo/x.py": b"x" * 300})
    else:
        good = make_sdist(tmp_path / filename, metadata(), top="demo-1.0")
    original = good.read_bytes()
    chance = random.Random(filename)
    for _ in range(300):
        data = bytearray(original)
        for _ in range(chance.randint(1, 4)):
            at = chance.randrange(len(data))
            data[at:at + chance.randint(1, 8)] = os.urandom(chance.randint(0, 8))
        good.write_bytes(bytes(data))
        try:
            read_core_metadata(good, filename)
        except DistributionError:
            pass
