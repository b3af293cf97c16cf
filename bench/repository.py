"""Generated package repositories: valid package filenames with small random content.

The same folder serves both servers: stock pypiserver serves it directly, and it is the
wrapper's bucket prefix (``BUCKET/packages/``).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

MAX_PROJECTS = 500
PROBE_PROJECT = "proj-000"  # file 0 always belongs to it, so it exists at every size


@dataclasses.dataclass(frozen=True)
class Repository:
    folder: Path  # where the files are
    files: tuple[str, ...]
    probe_project: str  # the project of the /simple/<p>/ measurements
    probe_files: int  # how many files it has
    probe_file: str  # the file of the /packages/<file> measurements

    @property
    def bucket(self) -> Path:
        """The folder above ``folder``: the wrapper's BUCKET_NAME for the local backend."""
        return self.folder.parent

    @property
    def routes(self) -> dict[str, str]:
        """Route label -> path actually requested."""
        return {
            "/simple/": "/simple/",
            "/simple/<p>/": f"/simple/{self.probe_project}/",
            "/packages/<file>": f"/packages/{self.probe_file}",
        }


def project_files(count: int, projects: int) -> list[str]:
    """``count`` sdist names spread round-robin over ``projects`` projects:
    ``proj-042-1.0.7.tar.gz`` is release 7 of project 42 (pypiserver parses it into
    ("proj-042", "1.0.7"))."""
    return [f"proj-{k % projects:03d}-1.0.{k // projects}.tar.gz" for k in range(count)]


def generate(folder: Path, count: int, *, seed: int = 1) -> Repository:
    """``count`` files of 1-4 KB over min(500, count) projects."""
    rng = random.Random(seed)
    names = project_files(count, min(MAX_PROJECTS, count))
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(rng.randbytes(rng.randint(1024, 4096)))
    probe = [n for n in names if n.startswith(PROBE_PROJECT + "-")]
    return Repository(folder, tuple(names), PROBE_PROJECT, len(probe), probe[0])


def generate_big_project(folder: Path, files: int, size: int, *, seed: int = 2) -> Repository:
    """One project of ``files`` files of ``size`` random bytes: every /simple/<p>/ of stock
    pypiserver hashes all of them."""
    rng = random.Random(seed)
    names = [f"bigproj-1.0.{k}.tar.gz" for k in range(files)]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(rng.randbytes(size))
    return Repository(folder, tuple(names), "bigproj", files, names[0])
