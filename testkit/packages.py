"""Build real, installable wheels for the tests (pure Python, no build backend needed)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, value: str = "", *, requires_python: str | None = None,
               requires: tuple[str, ...] = (), metadata_version: str | None = None, padding: int = 0) -> Path:
    """A wheel of project ``name`` with one module whose ``VALUE`` is ``value``. Its METADATA
    says ``Requires-Python`` and ``Requires-Dist`` as given, and ``metadata_version`` in place
    of ``version`` if given (a wheel whose name and metadata disagree); ``padding`` adds a
    data file of that many incompressible bytes (a large wheel)."""
    dist = re.sub(r"[-_.]+", "_", name).lower()
    module = dist
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VALUE = {value or name + ' ' + version!r}\n".encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {metadata_version or version}\n"
            "Summary: a package built by the gcs_sync tests\n"
            + (f"Requires-Python: {requires_python}\n" if requires_python else "")
            + "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gcs_sync-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if padding:
        files[f"{module}/padding.bin"] = os.urandom(padding)
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def make_sdist(folder: Path, name: str, version: str, value: str = "", filler: bytes = b"",
               filename: str = "") -> Path:
    """A real sdist ``<name>-<version>.tar.gz`` (or ``filename``, which must end in
    ``.tar.gz``) whose top folder ``<name>-<version>/`` holds its ``PKG-INFO`` and one
    module whose ``VALUE`` is ``value``; ``filler``, if given, is one more member (to make
    a file of some size)."""
    import io
    import tarfile

    top = f"{name}-{version}"
    module = re.sub(r"[-_.]+", "_", name).lower()
    members = {
        f"{top}/PKG-INFO": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Summary: a package built by the gcs_sync tests\n"
        ).encode(),
        f"{top}/{module}/__init__.py": f"VALUE = {value or name + ' ' + version!r}\n".encode(),
    }
    if filler:
        members[f"{top}/filler.bin"] = filler
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / (filename or f"{top}.tar.gz")
    with tarfile.open(sdist, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return sdist


def sdist_bytes(name: str, version: str, value: str = "") -> bytes:
    """The bytes of ``make_sdist(..., name, version, value)``, for a test that posts them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return make_sdist(Path(folder), name, version, value).read_bytes()
