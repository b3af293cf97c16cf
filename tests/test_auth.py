"""Who gets in: pypiserver's own auth, unchanged by the wrapper. Every AUTHENTICATE action
(update, download, list) with no credentials (401 and a challenge, so pip and uv prompt),
wrong ones (403) and right ones; every htpasswd scheme a user is likely to have; and no
password or Authorization header in any log line."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1, sha512_crypt
from werkzeug.test import Client

from gcs_sync import build_app

from .buckets import BucketProbe
from .conftest import settings_for
from .packages import make_wheel
from .servers import PASSWORD, USER, new_venv, pip_install, start_instance, twine_upload

pytestmark = pytest.mark.parametrize("bucket", ["local"], indirect=True)  # auth never depends on the store

NONE, WRONG, RIGHT = "no credentials", "wrong password", "right password"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


CREDENTIALS = {NONE: {}, WRONG: basic(USER, "not-the-password"), RIGHT: basic(USER, PASSWORD)}


def app_for(bucket: BucketProbe, tmp_path: Path, htpasswd: Path, authenticate: str) -> Client:
    settings = settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd, AUTHENTICATE=authenticate)
    return Client(build_app(settings))


def upload(http: Client, headers: dict[str, str], filename: str = "demo-1.0.tar.gz"):
    return http.post("/", headers=headers, data={
        ":action": "file_upload", "content": (io.BytesIO(b"demo"), filename)})


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


@pytest.mark.parametrize("scheme", [apr_md5_crypt, ldap_sha1, sha512_crypt, bcrypt], ids=lambda h: h.name)
def test_every_common_htpasswd_scheme_works(scheme, bucket: BucketProbe, tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = HtpasswdFile(str(path), new=True)
    users.set_hash("carol", scheme.hash("carol's secret"))
    users.save()
    assert path.read_text().startswith("carol:" + scheme.hash("x")[:3])  # the scheme under test
    http = app_for(bucket, tmp_path, path, "update")
    assert upload(http, basic("carol", "carol's secret")).status_code == 200
    assert upload(http, basic("carol", "wrong"), "other-1.0.tar.gz").status_code == 403


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
