"""A file on this instance's disk (a mirror's package file, a cached file) is answered as
stock pypiserver answers it, and a sync removing or replacing it during the request is a
404 or the whole old file: never a 500, never one file's length with another's bytes."""

from __future__ import annotations

import builtins
import hashlib
import mimetypes
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from pypiserver.bottle_wrapper import Bottle, static_file
from werkzeug.test import Client

from gcs_sync.web import local_file
from testkit.buckets import BucketProbe

from .test_app import App

pytestmark = pytest.mark.parametrize("bucket", ["local"], indirect=True)

NAMES = ["plain-1.0.tar.gz", "plain-1.0-py3-none-any.whl", "plain-1.0.zip"]


def stock_client(root: Path, cache_control: int) -> Client:
    """pypiserver's ``server_static`` answer for a file of ``root``, on the vendored bottle."""
    app = Bottle()

    @app.route("/packages/<filename>")
    def serve(filename: str):
        response = static_file(filename, root=str(root), mimetype=mimetypes.guess_type(filename)[0])
        response.set_header("Cache-Control", f"public, max-age={cache_control}")
        return response

    return Client(app)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def held_app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path, mode: str = "mirror") -> App:
    app = App(bucket, tmp_path / "packages", htpasswd, PACKAGE_FILES=mode, CACHE_CONTROL=600)
    for name in NAMES:
        bucket.put(name, f"the bytes of {name}, ".encode() * 500)
    app.checked_get("/simple/")
    assert all(app.http.get(f"/packages/{name}").status_code == 200 for name in NAMES)
    return app


ASKS = [
    ("GET", {}),
    ("HEAD", {}),
    ("GET", {"Range": "bytes=-100"}),
    ("GET", {"Range": "bytes=10-19"}),
    ("HEAD", {"Range": "bytes=10-19"}),
    ("GET", {"Range": "bytes=999999-"}),
    ("GET", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    ("GET", {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}),
]


@pytest.mark.parametrize("name", NAMES)
def test_a_mirrors_file_is_answered_exactly_as_stock_pypiserver_answers_it(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, name: str
) -> None:
    app = held_app(bucket, tmp_path, htpasswd)
    stock = stock_client(app.folder, 600)
    for method, headers in ASKS:
        ours = app.http.open(f"/packages/{name}", method=method, headers=headers)
        theirs = stock.open(f"/packages/{name}", method=method, headers=headers)
        asked = f"{method} {headers}"
        assert ours.status_code == theirs.status_code, asked
        assert ours.get_data() == theirs.get_data(), asked
        for header in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified",
                       "Cache-Control", "Content-Encoding", "Content-Disposition"):
            assert ours.headers.get(header) == theirs.headers.get(header), f"{asked}: {header}"


def _at_the_open_of(monkeypatch: pytest.MonkeyPatch, target: Path, action: Callable[[], None],
                    when: str) -> list[str]:
    """Run ``action`` just ``before`` or ``after`` the request opens ``target``: the moment a
    sync in another thread or worker could remove or replace the file. A patched ``open``:
    no real server can be made to land a removal in that instant."""
    real_open = builtins.open
    done: list[str] = []

    def patched_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if done or not isinstance(file, (str, os.PathLike)) or os.path.abspath(file) != str(target):
            return real_open(file, *args, **kwargs)
        done.append(when)
        if when == "before":
            action()
            return real_open(file, *args, **kwargs)
        opened = real_open(file, *args, **kwargs)
        action()
        return opened

    monkeypatch.setattr(builtins, "open", patched_open)
    return done


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("mode", ["mirror", "cache"])
def test_a_file_removed_as_it_is_opened_is_a_404_or_served_whole(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch, mode: str, when: str
) -> None:
    app = held_app(bucket, tmp_path, htpasswd, mode)
    name = NAMES[0]
    data = f"the bytes of {name}, ".encode() * 500
    # Where the file is read from: the folder, or the cache (under the control folder).
    target = app.folder / name if mode == "mirror" else app.folder / ".gcs_sync" / "cache" / sha256(data)
    assert target.is_file()
    done = _at_the_open_of(monkeypatch, target, target.unlink, when)
    answer = app.http.get(f"/packages/{name}")
    assert done == [when]
    if mode == "mirror" and when == "before":
        # Removed by a sync (this worker's index has not caught up): gone, as the removal says.
        assert answer.status_code == 404 and name in answer.get_data(as_text=True)
    else:
        # Open before the removal, or evicted from the cache (fetched again): whole.
        assert answer.status_code == 200 and answer.get_data() == data
        assert answer.headers["Content-Length"] == str(len(data))


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_file_replaced_as_it_is_opened_is_served_whole_with_its_own_length(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # A removal then a new upload of the same name, renamed in by the sync: the answer is
    # one file or the other, whole, never one's bytes under the other's length.
    app = held_app(bucket, tmp_path, htpasswd)
    name = NAMES[1]
    old, new = f"the bytes of {name}, ".encode() * 500, b"other, longer bytes " * 900
    target = app.folder / name

    def replace() -> None:
        (app.folder / ".new").write_bytes(new)
        os.replace(app.folder / ".new", target)

    done = _at_the_open_of(monkeypatch, target, replace, when)
    answer = app.http.get(f"/packages/{name}")
    assert done == [when]
    assert answer.status_code == 200 and answer.get_data() == (new if when == "before" else old)
    assert answer.headers["Content-Length"] == str(len(answer.get_data()))


def test_a_held_file_gone_from_the_folder_is_a_404_naming_it(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    # Another worker's sync removed it; this worker's index still lists it (no check yet).
    app = held_app(bucket, tmp_path, htpasswd)
    name = NAMES[2]
    (app.folder / name).unlink()
    answer = app.http.get(f"/packages/{name}")
    assert answer.status_code == 404 and name in answer.get_data(as_text=True)


@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_a_file_removed_as_its_digest_is_made_is_linked_with_its_sha256(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    # HASH_ALGO other than sha256: a mirror's page hashes its files; a sync in another
    # worker removed one since this worker's index listed it.
    app = App(bucket, tmp_path / "packages", htpasswd, HASH_ALGO=algorithm)
    for version in ("1.0", "2.0"):
        bucket.put(f"demo-{version}.tar.gz", version.encode())
    app.checked_get("/simple/")
    assert app.client.wait_for_fill(30) and (app.folder / "demo-2.0.tar.gz").is_file()
    target = app.folder / "demo-2.0.tar.gz"
    done = _at_the_open_of(monkeypatch, target, target.unlink, "before")
    answer = app.http.get("/simple/demo/")
    assert done == ["before"] and answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert f"demo-1.0.tar.gz#{algorithm}={hashlib.new(algorithm, b'1.0').hexdigest()}" in page
    assert f"demo-2.0.tar.gz#sha256={hashlib.sha256(b'2.0').hexdigest()}" in page


def test_a_file_that_cannot_be_read_is_stocks_403_not_a_500(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file another user wrote with mode 0600. The tests run as root, whom no mode stops:
    # the open's refusal is injected.
    app = held_app(bucket, tmp_path, htpasswd)
    name = NAMES[0]
    target = app.folder / name

    def refuse() -> None:
        raise PermissionError(13, "Permission denied", str(target))

    _at_the_open_of(monkeypatch, target, refuse, "before")
    stock = stock_client(app.folder, 600)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what stock checks instead
    ours, theirs = app.http.get(f"/packages/{name}"), stock.get(f"/packages/{name}")
    assert ours.status_code == theirs.status_code == 403
    assert ours.get_data() == theirs.get_data()
    assert ours.headers.get("Cache-Control") == theirs.headers.get("Cache-Control")
