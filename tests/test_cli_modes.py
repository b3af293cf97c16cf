"""The command line with PACKAGE_FILES cache or redirect: the folder holds a catalog of
the bucket and a file cache, not the files, and ``status``, ``pull`` and ``verify`` say so."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gcs_sync import cli
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel

from .test_feed import Instance


@pytest.fixture
def env(bucket: BucketProbe, tmp_path: Path) -> dict[str, str]:
    return {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(tmp_path / "here"), "PACKAGE_FILES": "cache",
            "CACHE_MAX_BYTES": "10MiB"}


def run(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv), env)
    return code, capsys.readouterr().out


def test_status_pull_and_verify_in_cache_mode(
    bucket: BucketProbe, tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    writer = Instance(bucket, tmp_path / "writer")
    wheels = [make_wheel(tmp_path / "dist", name, "1.0") for name in ("alpha", "beta")]
    for wheel in wheels:
        writer.upload(wheel)

    code, out = run(capsys, env, "status")
    assert code == 1 and "PACKAGE_FILES=cache" in out and "not catalogued yet" in out
    assert all(wheel.name in out for wheel in wheels) and "cache: empty" in out

    code, out = run(capsys, env, "pull")
    assert code == 0 and "catalogued 2 files" in out, out
    here = tmp_path / "here"
    assert [p.name for p in here.iterdir() if not p.name.startswith(".")] == []  # no package bytes

    code, out = run(capsys, env, "status", "--json")
    report = json.loads(out)
    assert code == 0 and report["in_sync"] and report["catalogued"] == 2 and report["package_files"] == "cache"

    bucket.delete(wheels[0].name)  # another tool
    code, out = run(capsys, env, "status")
    assert code == 1 and "gone from the bucket" in out and wheels[0].name in out

    # The cache holds the bytes of the files it served, named by their digest.
    cache = here / ".gcs_sync" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    data = wheels[1].read_bytes()
    cached = cache / hashlib.sha256(data).hexdigest()
    cached.write_bytes(data)
    code, out = run(capsys, env, "verify")
    assert code == 0 and "1 of 1 cached files match" in out and "ok: every cached file matches" in out
    cached.write_bytes(data[:-1] + b"x")  # a disk that lost a byte: a hit would serve it
    code, out = run(capsys, env, "verify")
    assert code == 1 and "MISMATCH" in out and wheels[1].name in out
