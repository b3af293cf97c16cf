"""Who gets in: pypiserver's auth decorator with our check of the htpasswd file
(gcs_sync/auth/htpasswd.py). Every AUTHENTICATE action (update, download, list) with no
credentials (401 and a challenge, so pip and uv prompt), wrong ones (403) and right ones;
every accepted htpasswd scheme, and never a hash string as a password; an unknown user
as slow as a wrong password; good logins remembered until the file changes; a bound on
failed ones; and no password or Authorization header in any log line."""

from __future__ import annotations

import base64
import io
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import bcrypt as bcrypt_library
import pytest
from passlib.apache import HtpasswdFile
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1, md5_crypt, sha256_crypt, sha512_crypt
from werkzeug.test import Client

from gcs_sync import build_app
from gcs_sync.auth.password_file import step_mtime
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel, sdist_bytes
from testkit.servers import PASSWORD, USER, new_venv, pip_install, run, start_instance, twine_upload

from .conftest import settings_for

pytestmark = pytest.mark.parametrize("bucket", ["local"], indirect=True)  # auth never depends on the store

NONE, WRONG, RIGHT = "no credentials", "wrong password", "right password"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


CREDENTIALS = {NONE: {}, WRONG: basic(USER, "not-the-password"), RIGHT: basic(USER, PASSWORD)}


def app_for(bucket: BucketProbe, tmp_path: Path, htpasswd: Path, authenticate: str) -> Client:
    settings = settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd, AUTHENTICATE=authenticate)
    return Client(build_app(settings))


def upload(http: Client, headers: dict[str, str], filename: str = "demo-1.0.tar.gz"):
    """Upload a real sdist named ``filename`` (``<name>-<version>.tar.gz``)."""
    name, version = filename.removesuffix(".tar.gz").rsplit("-", 1)
    return http.post("/", headers=headers, data={
        ":action": "file_upload", "content": (io.BytesIO(sdist_bytes(name, version)), filename)})


@pytest.mark.parametrize("authenticate", ["update", "update,download", "update,download,list"])
@pytest.mark.parametrize("credentials", [NONE, WRONG, RIGHT])
def test_each_protected_action_asks_for_and_checks_credentials(
    authenticate: str, credentials: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    bucket.put("there-1.0.tar.gz", b"there")
    http = app_for(bucket, tmp_path, htpasswd, authenticate)
    headers = CREDENTIALS[credentials]
    protected = set(authenticate.split(","))
    replies = {
        "update": upload(http, headers),
        "download": http.get("/packages/there-1.0.tar.gz", headers=headers),
        "list": http.get("/simple/there/", headers=headers),
    }
    for action, reply in replies.items():
        if action not in protected or credentials == RIGHT:
            assert reply.status_code == 200, (action, reply.status_code)
        elif credentials == NONE:
            assert reply.status_code == 401, (action, reply.status_code)
            assert reply.headers["WWW-Authenticate"].startswith("Basic realm="), action
        else:
            assert reply.status_code == 403, (action, reply.status_code)
    assert (bucket.get("demo-1.0.tar.gz") is not None) == (credentials == RIGHT)


@pytest.mark.parametrize("user", ["al\nice", "al\tice", "nul\x00", "x" * 300], ids=["newline", "tab", "nul", "too long"])
def test_a_user_name_no_htpasswd_can_hold_is_wrong_credentials_not_a_500(
    user: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """passlib raises ValueError on such names; stock pypiserver would answer 500."""
    http = app_for(bucket, tmp_path, htpasswd, "update,download,list")
    headers = basic(user, PASSWORD)
    assert upload(http, headers).status_code == 403
    assert http.get("/simple/", headers=headers).status_code == 403
    assert bucket.names() == set()


SCHEMES = [apr_md5_crypt, md5_crypt, ldap_sha1, sha256_crypt, sha512_crypt, bcrypt]


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda h: h.name)
def test_every_accepted_htpasswd_scheme_works_and_its_hash_is_not_a_password(
    scheme, bucket: BucketProbe, tmp_path: Path
) -> None:
    """md5_crypt ("$1$", from openssl passwd -1) is the one stock pypiserver gets backwards:
    passlib's htpasswd context does not know it, so the hash string logs in instead."""
    path = tmp_path / "htpasswd"
    stored = scheme.hash("carol's secret")
    write_users(path, carol=stored)
    assert path.read_text().startswith("carol:" + scheme.hash("x")[:3])  # the scheme under test
    http = app_for(bucket, tmp_path, path, "update")
    assert upload(http, basic("carol", "carol's secret")).status_code == 200
    assert upload(http, basic("carol", "wrong"), "other-1.0.tar.gz").status_code == 403
    assert upload(http, basic("carol", stored), "other-1.0.tar.gz").status_code == 403
    assert bucket.names() == {"demo-1.0.tar.gz"}


def write_users(path: Path, **hashes: str) -> None:
    """Replace the htpasswd file at ``path`` as auth/password_file.py replaces the bucket's copy."""
    users = HtpasswdFile(new=True)
    for user, stored in hashes.items():
        users.set_hash(user, stored)
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(users.to_string())
    step_mtime(temp, path)
    os.replace(temp, path)


@pytest.mark.parametrize("stored", ["$y$j9T$F5Jx5fExrKuJdvbQpK0Zo1$7iDHlOrYh0jqN8ylDPyq0Mhd/xZq5ePzXz5WCy.vyr5",
                                    "{SSHA}xJqIzzTb2ma4xfTBzCC1xFpLRbk2NzgyOA==", "bobs-password"],
                         ids=["yescrypt", "ssha", "plaintext"])
def test_a_new_version_with_an_entry_of_another_scheme_is_not_applied(
    stored: str, bucket: BucketProbe, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start refuses such a file (tests/test_config.py); a running server that sees it
    appear keeps the users it had, rather than letting the hash string log in as stock
    pypiserver does."""
    path = tmp_path / "htpasswd"
    write_users(path, alice=apr_md5_crypt.hash(PASSWORD))
    http = app_for(bucket, tmp_path, path, "update,download,list")
    write_users(path, alice=apr_md5_crypt.hash(PASSWORD), bob=stored)
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):
        assert http.get("/simple/", headers=basic("bob", stored)).status_code == 403
    assert f"htpasswd file {path}, line 2: the entry of user 'bob' is not a usable hash" in caplog.text
    assert stored not in caplog.text
    assert http.get("/simple/", headers=basic(USER, PASSWORD)).status_code == 200  # the users read before


def test_no_password_or_authorization_header_is_logged(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http = app_for(bucket, tmp_path, htpasswd, "update,download,list")
    with caplog.at_level(logging.DEBUG):  # every logger, at its most talkative
        for headers in CREDENTIALS.values():
            upload(http, headers)
            http.get("/simple/demo/", headers=headers)
    assert "demo-1.0.tar.gz" in caplog.text  # the log did see these requests
    for secret in (PASSWORD, "not-the-password", CREDENTIALS[RIGHT]["Authorization"].split()[1]):
        assert secret not in caplog.text


@pytest.mark.slow
def test_the_server_log_holds_no_password_after_twine_and_pip(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    instance = start_instance({**bucket.env(), "PASSWORD_FILE": str(htpasswd),
                               "AUTHENTICATE": "update,download,list", "LOG_LEVEL": "DEBUG"},
                              tmp_path / "served", tmp_path)
    try:
        wheel = make_wheel(tmp_path / "dist", "secretive", "1.0")
        assert twine_upload(instance.url, wheel).returncode == 0
        index = instance.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/simple/"
        installed = pip_install(new_venv(tmp_path / "venv"), index, "secretive==1.0")
        assert installed.returncode == 0, installed.stdout + installed.stderr
    finally:
        instance.stop()
    log = instance.log()
    assert "secretive" in log
    token = CREDENTIALS[RIGHT]["Authorization"].split()[1]
    assert PASSWORD not in log and token not in log


def test_an_unknown_user_takes_as_long_as_a_wrong_password(bucket: BucketProbe, tmp_path: Path) -> None:
    """Timing must not tell who exists: stock pypiserver answers an unknown user in about
    1.5 ms and a wrong password of a bcrypt user after a whole bcrypt (about 220 ms).
    Generous on purpose (the same order, not the same time): requests alternate, and the
    medians of five of each are compared."""
    path = tmp_path / "htpasswd"
    write_users(path, alice=bcrypt.hash(PASSWORD))  # passlib's default cost, 12
    http = app_for(bucket, tmp_path, path, "update,download,list")
    seconds: dict[str, list[float]] = {"alice": [], "nobody": []}
    for _ in range(5):
        for user in seconds:
            started = time.perf_counter()
            assert http.get("/simple/", headers=basic(user, "not-the-password")).status_code == 403
            seconds[user].append(time.perf_counter() - started)
    existing, unknown = statistics.median(seconds["alice"]), statistics.median(seconds["nobody"])
    assert unknown >= 0.5 * existing, f"unknown user {unknown * 1000:.1f} ms, wrong password {existing * 1000:.1f} ms"


def count_bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every bcrypt verification passlib makes goes through the bcrypt library's hashpw:
    wrapped (not replaced) to count them."""
    calls: list[bytes] = []
    hashpw = bcrypt_library.hashpw

    def counted(password: bytes, salt: bytes) -> bytes:
        calls.append(salt)
        return hashpw(password, salt)

    monkeypatch.setattr(bcrypt_library, "hashpw", counted)
    return calls


def test_a_good_login_is_verified_once_until_the_file_changes(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "htpasswd"
    cheap = bcrypt.using(rounds=4)  # the count is under test, not the cost
    write_users(path, alice=cheap.hash(PASSWORD), bob=cheap.hash("bob's"))
    http = app_for(bucket, tmp_path, path, "update,download,list")
    calls = count_bcrypt_calls(monkeypatch)
    for _ in range(5):  # a pip install: one login per request
        assert http.get("/simple/", headers=basic(USER, PASSWORD)).status_code == 200
    assert len(calls) == 1
    assert http.get("/simple/", headers=basic(USER, "not-the-password")).status_code == 403  # never remembered
    assert http.get("/simple/", headers=basic(USER, "not-the-password")).status_code == 403
    assert len(calls) == 3
    # A changed password counts at the next request: the old one is forgotten.
    write_users(path, alice=cheap.hash("new password"), bob=cheap.hash("bob's"))
    assert http.get("/simple/", headers=basic(USER, PASSWORD)).status_code == 403
    assert http.get("/simple/", headers=basic(USER, "new password")).status_code == 200
    assert http.get("/simple/", headers=basic("bob", "bob's")).status_code == 200
    # So does a removed user, remembered a moment ago.
    write_users(path, bob=cheap.hash("bob's"))
    assert http.get("/simple/", headers=basic(USER, "new password")).status_code == 403
    assert http.get("/simple/", headers=basic("bob", "bob's")).status_code == 200


def test_failed_logins_are_bounded_per_worker(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    """A guesser gets 10 verified failures at once, then one a second; past that a login
    that is not remembered gets 429 unverified. A login remembered before still works."""
    http = app_for(bucket, tmp_path, htpasswd, "update,download,list")
    assert http.get("/simple/", headers=basic(USER, PASSWORD)).status_code == 200  # remembered
    replies = [http.get("/simple/", headers=basic(f"guess{n}", "guess")).status_code for n in range(12)]
    assert replies[:10] == [403] * 10 and replies[10:] == [429, 429]
    refused = http.get("/simple/", headers=basic("guess", "guess"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert http.get("/simple/", headers=basic(USER, PASSWORD)).status_code == 200
    time.sleep(1.2)  # one more verification a second: the bound under test, so a sleep
    assert http.get("/simple/", headers=basic("guess", "guess")).status_code == 403


@pytest.mark.slow
def test_uv_publish_without_a_password_is_told_it_was_empty_and_its_password_variable_works(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    # uv does not prompt: `uv publish -u NAME` sends an empty password (README, "Using it").
    instance = start_instance({**bucket.env(), "PASSWORD_FILE": str(htpasswd)}, tmp_path / "served", tmp_path)
    try:
        wheel = make_wheel(tmp_path / "dist", "uv-published", "1.0")
        command = [sys.executable, "-m", "uv", "publish", "--publish-url", instance.url + "/", "-u", USER, str(wheel)]
        empty = run(command)
        assert empty.returncode != 0
        assert "403" in empty.stderr and "password for user alice was empty" in empty.stderr, empty.stderr
        assert bucket.get(wheel.name) is None
        published = run(command, {"UV_PUBLISH_PASSWORD": PASSWORD})
        assert published.returncode == 0, published.stderr
        assert bucket.get(wheel.name) == wheel.read_bytes()
    finally:
        instance.stop()
    # A wrong password still gets a plain 403 (nothing said about the password).
    http = app_for(bucket, tmp_path, htpasswd, "update")
    assert upload(http, basic(USER, "")).status == "403 Empty password"
    assert upload(http, basic(USER, "wrong")).status == "403 Forbidden"
