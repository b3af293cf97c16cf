"""PACKAGE_FILES=mirror|cache|redirect as clients see it: pip and uv install through a
302 to a signed URL of the bucket (GCS emulator, moto), cache mode redirects large files
and serves small ones itself, pypiserver's auth comes before any redirect, and what
cannot sign stops the start (redirect) or is a warning (cache).

The emulators do not check signatures or expiry (notes: emulators), so the tests check
the URL's shape (expiry, date, signer) and that the bytes behind it are the ones the
index's link names.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import http.client
import http.server
import json
import logging
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import pytest

from gcs_sync import ConfigError, Settings
from gcs_sync.errors import SigningNotPermitted, SigningUnavailable
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel
from testkit.servers import (
    PASSWORD,
    USER,
    Instance,
    links,
    new_venv,
    pip_install,
    start_instance,
    twine_upload,
    uv_install,
)
from testkit.storage_servers import write_htpasswd
from testkit.wait import eventually

if TYPE_CHECKING:
    from gcs_sync.drivers.gcs import GCSDriver

SA_EMAIL = "index-signer@test-project.iam.gserviceaccount.com"


# -- helpers ------------------------------------------------------------------------------


def service_account_key(path: Path, email: str = SA_EMAIL) -> Path:
    """A service-account JSON key file (a fresh RSA key), as GOOGLE_APPLICATION_CREDENTIALS names one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project", "private_key_id": "k1",
        "private_key": pem, "client_email": email, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


def fetch(url: str, auth: Optional[tuple[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    """One GET, redirects not followed: status, headers, body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def signed_at(url: str, backend: str) -> datetime.datetime:
    value = query(url)["X-Goog-Date" if backend == "gcs" else "X-Amz-Date"]
    return datetime.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def expires(url: str, backend: str) -> str:
    return query(url)["X-Goog-Expires" if backend == "gcs" else "X-Amz-Expires"]


@pytest.fixture(params=["gcs", "s3"])
def cloud_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> BucketProbe:
    from tests.conftest import new_probe

    return new_probe(request.param, request, tmp_path)


def index_env(bucket: BucketProbe, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**bucket.env(), "PASSWORD_FILE": str(write_htpasswd(tmp_path / "htpasswd")), "SYNC_INTERVAL": "1"}
    if bucket.backend == "gcs":
        # A key file signs; the storage client itself stays anonymous on the emulator.
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(service_account_key(tmp_path / "key.json"))
    return {**env, **extra}


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Instance]]:
    instances: list[Instance] = []
    yield instances
    for instance in instances:
        instance.stop()


def publish(instance: Instance, tmp_path: Path, *wheels: Path) -> dict[str, str]:
    """Upload ``wheels`` with twine; the links (filename: sha256) of their project once listed."""
    uploaded = twine_upload(instance.url, *wheels)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    project = wheels[0].name.split("-")[0]
    names = {wheel.name for wheel in wheels}
    assert eventually(lambda: names <= set(links(instance, project)), 10), instance.log()[-3000:]
    return links(instance, project)


# -- redirect ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_pip_and_uv_install_through_a_signed_url(cloud_bucket: BucketProbe, tmp_path: Path,
                                                  started: list[Instance]) -> None:
    instance = start_instance(index_env(cloud_bucket, tmp_path, PACKAGE_FILES="redirect"),
                              tmp_path / "index", tmp_path)
    started.append(instance)
    wheel = make_wheel(tmp_path / "dist", "signedpkg", "1.0", "through the bucket")
    link_sha256 = publish(instance, tmp_path, wheel)[wheel.name]

    status, headers, _ = fetch(f"{instance.url}/packages/{wheel.name}")
    assert status == 302, instance.log()[-2000:]
    location = headers["location"]
    assert headers["cache-control"] == "no-store"
    assert expires(location, cloud_bucket.backend) == "300"
    age = datetime.datetime.now(datetime.timezone.utc) - signed_at(location, cloud_bucket.backend)
    assert abs(age.total_seconds()) < 60
    if cloud_bucket.backend == "gcs":
        # Signed with the key file's account, at the emulator's address.
        assert query(location)["X-Goog-Credential"].startswith(SA_EMAIL + "/")
        assert location.startswith(cloud_bucket.env()["STORAGE_EMULATOR_HOST"] + f"/{cloud_bucket.name}/")
    with urllib.request.urlopen(location, timeout=30) as reply:
        assert hashlib.sha256(reply.read()).hexdigest() == link_sha256

    index_url = f"{instance.url}/simple/"
    pip_python = new_venv(tmp_path / "pip-venv")
    installed = pip_install(pip_python, index_url, "signedpkg")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    uv_python = new_venv(tmp_path / "uv-venv")
    installed = uv_install(uv_python, index_url, "signedpkg", tmp_path / "uv-cache")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # Both got the file through the redirect: the index served no package bytes itself.
    assert instance.log().count(f"GET /packages/{wheel.name} 302") >= 2, instance.log()[-3000:]
    assert f"GET /packages/{wheel.name} 200" not in instance.log()
    assert json.loads(fetch(f"{instance.url}/ready")[2])["package_files"] == "redirect"
    assert not list(instance.folder.glob("*.whl"))  # the instance holds no package file


@pytest.mark.slow
def test_downloads_are_authenticated_before_any_redirect(cloud_bucket: BucketProbe, tmp_path: Path,
                                                         started: list[Instance]) -> None:
    instance = start_instance(
        index_env(cloud_bucket, tmp_path, PACKAGE_FILES="redirect", AUTHENTICATE="download,update"),
        tmp_path / "index", tmp_path)
    started.append(instance)
    wheel = make_wheel(tmp_path / "dist", "privatepkg", "1.0")
    publish(instance, tmp_path, wheel)
    url = f"{instance.url}/packages/{wheel.name}"

    status, headers, _ = fetch(url)
    assert status == 401 and headers["www-authenticate"] == 'Basic realm="pypi"'
    assert "location" not in headers
    status, headers, _ = fetch(url, auth=(USER, "wrong"))
    assert status == 403 and "location" not in headers
    status, headers, _ = fetch(url, auth=(USER, PASSWORD))
    assert status == 302 and "X-" in headers["location"]


@pytest.mark.slow
def test_an_unknown_file_is_pypiservers_404(cloud_bucket: BucketProbe, tmp_path: Path,
                                            started: list[Instance]) -> None:
    instance = start_instance(index_env(cloud_bucket, tmp_path, PACKAGE_FILES="redirect"),
                              tmp_path / "index", tmp_path)
    started.append(instance)
    status, headers, body = fetch(f"{instance.url}/packages/nothere-1.0-py3-none-any.whl")
    assert status == 404 and "location" not in headers
    assert b"nothere-1.0-py3-none-any.whl does not exist" in body


@pytest.mark.slow
def test_redirect_on_a_local_folder_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    env = {"STORAGE_BACKEND": "local", "BUCKET_NAME": str(tmp_path / "bucket"), "PACKAGE_FILES": "redirect"}
    with pytest.raises(RuntimeError) as failed:
        start_instance(env, tmp_path / "index", tmp_path)
    assert "gcs_sync configuration error: PACKAGE_FILES: redirect needs a bucket that signs URLs" in str(failed.value)


@pytest.mark.slow
def test_without_credentials_that_sign_redirect_stops_and_cache_serves_everything_itself(
        gcs_emulator: str, tmp_path: Path, started: list[Instance]) -> None:
    """On the emulator without a key file (no GOOGLE_APPLICATION_CREDENTIALS) nothing can sign."""
    from testkit.buckets import GCSProbe

    bucket = GCSProbe(gcs_emulator)
    env = {k: v for k, v in index_env(bucket, tmp_path).items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    with pytest.raises(RuntimeError) as failed:
        start_instance({**env, "PACKAGE_FILES": "redirect"}, tmp_path / "redirect", tmp_path)
    assert "gcs_sync configuration error: PACKAGE_FILES: redirect needs signed URLs" in str(failed.value)
    assert "no credentials to sign with" in str(failed.value)

    instance = start_instance({**env, "PACKAGE_FILES": "cache", "REDIRECT_MIN_BYTES": "1KiB"},
                              tmp_path / "cache", tmp_path)
    started.append(instance)
    assert "served through this instance; App Engine and Cloud Run refuse responses over 32 MB" in instance.log()
    wheel = make_wheel(tmp_path / "dist", "unsignedpkg", "1.0", padding=4096)
    shown = publish(instance, tmp_path, wheel)
    status, _, body = fetch(f"{instance.url}/packages/{wheel.name}")
    assert status == 200 and hashlib.sha256(body).hexdigest() == shown[wheel.name]


# -- cache ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_mode_redirects_large_files_and_serves_small_ones(cloud_bucket: BucketProbe, tmp_path: Path,
                                                                started: list[Instance]) -> None:
    instance = start_instance(
        index_env(cloud_bucket, tmp_path, PACKAGE_FILES="cache", REDIRECT_MIN_BYTES="200KiB"),
        tmp_path / "index", tmp_path)
    started.append(instance)
    small = make_wheel(tmp_path / "dist", "mixedpkg", "1.0")
    large = make_wheel(tmp_path / "dist", "mixedpkg", "2.0", padding=300 * 1024)
    shown = publish(instance, tmp_path, small, large)

    status, headers, _ = fetch(f"{instance.url}/packages/{large.name}")
    assert status == 302 and expires(headers["location"], cloud_bucket.backend) == "300"
    with urllib.request.urlopen(headers["location"], timeout=30) as reply:
        assert hashlib.sha256(reply.read()).hexdigest() == shown[large.name]
    status, headers, body = fetch(f"{instance.url}/packages/{small.name}")
    assert status == 200 and body == small.read_bytes()
    assert hashlib.sha256(body).hexdigest() == shown[small.name]
    # The core metadata file (PEP 658) comes through the cache, never redirected.
    status, headers, body = fetch(f"{instance.url}/packages/{large.name}.metadata")
    assert status == 200 and b"Name: mixedpkg" in body and b"Version: 2.0" in body
    assert fetch(f"{instance.url}/packages/{large.name}.metadata")[2] == body  # now a cache hit
    # /ready says the mode, and what the cache holds: the small file and the metadata file.
    status, _, body = fetch(f"{instance.url}/ready")
    ready = json.loads(body)
    assert ready["package_files"] == "cache"
    assert ready["cache"]["files"] == 2 and ready["cache"]["max_bytes"] == 256 * 1024**2
    assert ready["cache"]["bytes"] >= len(small.read_bytes())
    assert not list(instance.folder.glob("*.whl"))  # only the cache holds package bytes

    # A new instance on the same bucket starts from the bucket's catalog, without a file.
    cold = start_instance(
        index_env(cloud_bucket, tmp_path, PACKAGE_FILES="cache", REDIRECT_MIN_BYTES="200KiB"),
        tmp_path / "cold", tmp_path)
    started.append(cold)
    assert eventually(lambda: links(cold, "mixedpkg") == shown, 10)
    assert fetch(f"{cold.url}/packages/{small.name}")[2] == small.read_bytes()
    assert fetch(f"{cold.url}/packages/{large.name}")[0] == 302


# -- signing: the drivers -------------------------------------------------------------


def test_gcs_signs_with_a_key_file_while_the_client_stays_anonymous(
        gcs_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.credentials import AnonymousCredentials

    from gcs_sync.drivers.gcs import GCSDriver

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account_key(tmp_path / "key.json")))
    driver = GCSDriver("some-bucket", "packages", timeout=10)
    assert isinstance(driver._client._credentials, AnonymousCredentials)  # no token fetches on the emulator
    url = driver.signed_url("a-1.0.tar.gz", 120)
    assert url.startswith(f"{gcs_emulator}/some-bucket/packages/a-1.0.tar.gz?")
    assert query(url)["X-Goog-Expires"] == "120" and query(url)["X-Goog-Credential"].startswith(SA_EMAIL + "/")
    driver.check_signing()


class FakeIam(http.server.BaseHTTPRequestHandler):
    """The IAM credentials API's signBlob, answering as the test says (``answer``)."""

    answer: tuple[int, dict[str, object]] = (200, {})
    paths: list[str] = []

    def do_POST(self) -> None:
        self.paths.append(self.path)
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_iam() -> Iterator[tuple[str, type[FakeIam]]]:
    handler = type("Iam", (FakeIam,), {"paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def iam_driver(iam_url: str, gcs_emulator: str, bucket: str = "some-bucket") -> "GCSDriver":
    """A driver whose credentials hold a token but no key (as App Engine's and Cloud
    Run's metadata-server credentials), signing as SA_EMAIL through ``iam_url``."""
    import google.oauth2.credentials
    from google.cloud import storage

    from gcs_sync.drivers.gcs import GCSDriver

    credentials = google.oauth2.credentials.Credentials(token="runtime-token")
    client = storage.Client(project="test", credentials=credentials)
    return GCSDriver(bucket, "packages", timeout=10, client=client, signing_account=SA_EMAIL,
                     iam_endpoint=iam_url)


def test_gcs_signs_through_iam_sign_blob(fake_iam: tuple[str, type[FakeIam]], gcs_emulator: str) -> None:
    """No emulator has IAM: signBlob is a local stand-in (the one kind of fake the guide
    allows: what no emulator can do). The URL carries the signature IAM returned."""
    url, handler = fake_iam
    handler.answer = (200, {"keyId": "k", "signedBlob": base64.b64encode(b"\x01\x02signature").decode()})
    signed = iam_driver(url, gcs_emulator).signed_url("a-1.0.tar.gz", 300)
    assert query(signed)["X-Goog-Signature"] == (b"\x01\x02signature").hex()
    assert query(signed)["X-Goog-Credential"].startswith(SA_EMAIL + "/")
    assert handler.paths == [f"/v1/projects/-/serviceAccounts/{SA_EMAIL}:signBlob"]


def test_a_refused_sign_blob_names_the_role(fake_iam: tuple[str, type[FakeIam]], gcs_emulator: str,
                                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """IAM's 403 (no emulator has IAM: a local stand-in answers as IAM does) is
    SigningNotPermitted naming the role and the account; it stops a start in redirect
    mode and is a warning in cache mode."""
    from gcs_sync.web.package_files import check_package_files

    url, handler = fake_iam
    handler.answer = (403, {"error": {
        "code": 403, "status": "PERMISSION_DENIED",
        "message": "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).",
    }})
    driver = iam_driver(url, gcs_emulator)
    with pytest.raises(SigningNotPermitted) as refused:
        driver.check_signing()
    assert "roles/iam.serviceAccountTokenCreator" in str(refused.value) and SA_EMAIL in str(refused.value)
    base = {"STORAGE_BACKEND": "gcs", "BUCKET_NAME": "some-bucket", "LOCAL_PACKAGE_DIRECTORY": str(tmp_path)}
    with pytest.raises(ConfigError) as stopped:
        check_package_files(Settings.from_env({**base, "PACKAGE_FILES": "redirect"}), driver)
    assert stopped.value.variable == "PACKAGE_FILES" and "roles/iam.serviceAccountTokenCreator" in str(stopped.value)
    with caplog.at_level(logging.WARNING, logger="gcs_sync.package_files"):
        assert check_package_files(Settings.from_env({**base, "PACKAGE_FILES": "cache"}), driver) is False
    assert "roles/iam.serviceAccountTokenCreator" in caplog.text and "32 MB" in caplog.text


def test_a_redirect_that_cannot_be_signed_now_is_a_503_naming_the_file(
        fake_iam: tuple[str, type[FakeIam]], gcs_emulator: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """IAM signs at start-up, then fails (no emulator has IAM: a local stand-in answers as
    IAM does): each download says so with a 503 naming the file, and the log says why."""
    from werkzeug.test import Client

    from gcs_sync import build_app
    from testkit.buckets import GCSProbe
    from tests.conftest import settings_for

    url, handler = fake_iam
    handler.answer = (200, {"keyId": "k", "signedBlob": base64.b64encode(b"sig").decode()})
    bucket = GCSProbe(gcs_emulator)
    settings = settings_for(bucket, tmp_path / "packages", PACKAGE_FILES="redirect",
                            PASSWORD_FILE=write_htpasswd(tmp_path / "htpasswd"))
    http = Client(build_app(settings, iam_driver(url, gcs_emulator, bucket.name)))
    wheel = make_wheel(tmp_path / "dist", "iampkg", "1.0")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    uploaded = http.post("/", data={":action": "file_upload", "content": (wheel.open("rb"), wheel.name)}, headers=auth)
    assert uploaded.status_code == 200, uploaded.text
    reply = http.get(f"/packages/{wheel.name}")
    assert reply.status_code == 302 and query(reply.headers["Location"])["X-Goog-Signature"] == b"sig".hex()

    handler.answer = (503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "try later"}})
    with caplog.at_level(logging.ERROR, logger="gcs_sync.package_files"):
        reply = http.get(f"/packages/{wheel.name}")
    assert reply.status_code == 503 and "Location" not in reply.headers
    assert f"Cannot serve {wheel.name}" in reply.text
    assert f"GET /packages/{wheel.name}: no signed URL" in caplog.text and "IAM signBlob answered 503" in caplog.text


def test_a_local_folder_cannot_sign(tmp_path: Path) -> None:
    from gcs_sync.drivers.local import LocalFolderDriver

    with pytest.raises(SigningUnavailable, match="a local folder cannot sign URLs"):
        LocalFolderDriver(tmp_path, "packages").check_signing()


def test_s3_presigns_with_the_clients_keys(s3_server: str) -> None:
    from gcs_sync.drivers.s3 import S3Driver

    url = S3Driver("some-bucket", "packages", timeout=10).signed_url("a-1.0.tar.gz", 300)
    assert "/some-bucket/packages/a-1.0.tar.gz?" in url or "some-bucket." in url
    assert query(url)["X-Amz-Expires"] == "300" and query(url)["X-Amz-Credential"].startswith("testing/")


# -- the index in cache and redirect mode ------------------------------------------------


def test_the_index_lists_catalogued_files_as_not_held_here(tmp_path: Path) -> None:
    from gcs_sync.records.record import FileRecord
    from gcs_sync.sync.folder import PackageFolder
    from gcs_sync.sync.state import CATALOGUED, StateFile, SyncedFile
    from gcs_sync.web.index import PackageIndex

    folder = PackageFolder(tmp_path / "packages")
    state = StateFile(folder.control, "gs://b/packages")

    def entry(name: str, size: int, version: str) -> SyncedFile:
        digest = hashlib.sha256(name.encode()).hexdigest()
        record = FileRecord(filename=name, size=size, sha256=digest, upload_time="2026-01-01T00:00:00Z")
        return SyncedFile(version, CATALOGUED, digest, record=record, record_version="1")

    state.save({"cat-1.0.tar.gz": entry("cat-1.0.tar.gz", 1234, "17")})
    catalog = PackageIndex(folder, StateFile(folder.control, "gs://b/packages"), "sha256")
    catalog.refresh()
    pkg = catalog.get("cat-1.0.tar.gz")
    assert pkg is not None and not (folder.path / "cat-1.0.tar.gz").exists() and not pkg.held
    assert (pkg.size, pkg.remote_version, pkg.digest) == (1234, "17", f"sha256={pkg.sha256}")
    assert [p.relfn for p in catalog.project_packages("cat")] == ["cat-1.0.tar.gz"]
    # A journal line (another worker's sync) reaches the index the same way.
    state.record("cat-2.0.tar.gz", entry("cat-2.0.tar.gz", 99, "18"))
    catalog.refresh()
    assert sorted(p.relfn for p in catalog.project_packages("cat")) == ["cat-1.0.tar.gz", "cat-2.0.tar.gz"]
    # Once a mirror's fill has brought it, it is listed as held here (its file in place).
    (folder.path / "cat-1.0.tar.gz").write_bytes(b"x" * 1234)
    state.record("cat-1.0.tar.gz", dataclasses.replace(entry("cat-1.0.tar.gz", 1234, "17"),
                                                       local_fingerprint=folder.fingerprint("cat-1.0.tar.gz")))
    catalog.refresh()
    held = catalog.get("cat-1.0.tar.gz")
    assert held is not None and held.held
