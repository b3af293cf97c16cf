"""A request's own bucket writes (issue 9): its undo deletes only what it created, and
a conflict is the bucket's answer, never a stale local view. On every driver, through
the wrapped app in-process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.packages import make_wheel

from .test_app import AUTH, App


@pytest.fixture
def app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> App:
    return App(bucket, tmp_path / "packages", htpasswd)


def upload_signed(app: App, wheel: Path, signature: bytes, user_agent: str = "gcs-sync-tests"):
    """One request of a wheel and its ``.asc``, as ``twine upload --sign`` sends it."""
    return app.http.post("/", headers={**AUTH, "User-Agent": user_agent}, data={
        ":action": "file_upload",
        "content": (io.BytesIO(wheel.read_bytes()), wheel.name),
        "gpg_signature": (io.BytesIO(signature), wheel.name + ".asc"),
    })


def test_a_signed_release_uploaded_again_with_a_new_signature_is_refused_and_kept_whole(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """gpg signatures never repeat their bytes: the wheel matches, the .asc conflicts.
    The wheel was not created by the second request, so its undo must not delete it."""
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    assert upload_signed(app, wheel, b"first signature").status_code == 200
    assert upload_signed(app, wheel, b"second signature").status_code == 409
    assert upload_signed(app, wheel, b"third signature", user_agent="twine/7.0.0").status_code == 400
    other = App(bucket, tmp_path / "other-instance", htpasswd)  # knows nothing locally
    assert upload_signed(other, wheel, b"fourth signature").status_code == 409
    assert bucket.names() == {wheel.name, wheel.name + ".asc"}
    assert bucket.get(wheel.name) == wheel.read_bytes()
    assert bucket.get(wheel.name + ".asc") == b"first signature"
    assert app.http.get(f"/packages/{wheel.name}").get_data() == wheel.read_bytes()


@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_an_identical_retry_that_fails_on_its_second_file_deletes_nothing(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, htpasswd: Path
) -> None:
    """The retry stored nothing itself (both files were there, byte for byte): when the
    bucket fails on the signature, its undo has nothing to delete."""
    app = App(bucket, tmp_path / "packages", htpasswd, STORAGE_TIMEOUT=2)
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    assert upload_signed(app, wheel, b"signature").status_code == 200
    proxy.add_rule(None, r"\.asc", Respond(503))  # the signature's write, and any look at it
    proxy.add_rule("POST", r"/upload/", Respond(503))  # GCS names the object in the body
    assert upload_signed(app, wheel, b"signature").status_code == 503
    proxy.clear_rules()
    packages = {name for name in bucket.names() if not name.startswith(".gcs_sync/")}
    assert {name: bucket.get(name) for name in packages} == {
        wheel.name: wheel.read_bytes(), wheel.name + ".asc": b"signature"}
    # The signature's write got no answer: its (claimed) intent stays, naming only it, for
    # the clean-up to remove it should that write land late; it found the old one there.


def test_a_file_removed_through_another_instance_can_be_uploaded_again_with_new_bytes(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """Instance A only receives uploads (which skip the freshness check), so its local
    view still has the removed file: the bucket, not that view, decides."""
    a = App(bucket, tmp_path / "a", htpasswd)
    b = App(bucket, tmp_path / "b", htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    rebuilt = make_wheel(tmp_path / "rebuilt", "demo", "1.0", value="rebuilt").read_bytes()
    other = make_wheel(tmp_path / "other", "demo", "1.0", value="other").read_bytes()
    assert len({wheel.read_bytes(), rebuilt, other}) == 3
    assert a.upload(wheel).status_code == 200
    assert b.http.post("/", headers=AUTH, data={":action": "remove_pkg", "name": "demo", "version": "1.0"}
                       ).status_code == 200
    assert bucket.names() == set() and bucket.record_names() == set()  # its record went with it
    assert a.upload(wheel, data=rebuilt).status_code == 200
    assert bucket.get(wheel.name) == rebuilt
    assert a.http.get(f"/packages/{wheel.name}").get_data() == rebuilt
    # While the bucket has it, other bytes are a conflict, whatever the local view says.
    assert a.upload(wheel, data=other).status_code == 409
    assert bucket.get(wheel.name) == rebuilt
