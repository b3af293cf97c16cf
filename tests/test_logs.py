"""The log: one line per request and per sync, Cloud Logging JSON in prod and text in dev,
never a password or an Authorization header. The formatter alone, the app in-process, and
real gunicorn with twine and pip in both tiers."""

from __future__ import annotations

import base64
import datetime
import io
import json
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
from pypiserver.bottle_wrapper import Bottle
from werkzeug.test import Client

from gcs_sync import build_app
from gcs_sync.logs import CloudLoggingFormatter, severity
from gcs_sync.web.request_log import REQUEST_LOGGER, RequestLog, basic_user
from testkit.buckets import BucketProbe
from testkit.packages import make_sdist, make_wheel
from testkit.servers import PASSWORD, USER, Instance, new_venv, pip_install, start_instance, twine_upload

from .conftest import settings_for

WRONG_PASSWORD = "not-the-password"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def formatted(record: logging.LogRecord) -> dict:
    line = CloudLoggingFormatter().format(record)
    assert "\n" not in line and line.isascii()
    return json.loads(line)


def record_of(logger: str, level: int, message: str, *args: object, **extra: object) -> logging.LogRecord:
    """A record as ``logging`` makes it for ``logger.log(level, message, *args, extra=extra)``."""
    record = logging.getLogger(logger).makeRecord(logger, level, __file__, 1, message, args, None, extra=extra)
    return record


# -- the JSON format -----------------------------------------------------------------


def test_a_record_is_one_json_line_with_cloud_loggings_fields() -> None:
    http_request = {"requestMethod": "GET", "requestUrl": "/simple/demo/", "status": 404, "latency": "0.0012s"}
    record = record_of("gcs_sync.requests", logging.WARNING, "GET %s %d", "/simple/demo/", 404,
                       json_fields={"httpRequest": http_request, "user": "alice", "severity": "DEBUG"})
    entry = formatted(record)
    assert entry["severity"] == "WARNING"  # a field of the line never replaces the record's own
    assert entry["message"] == "GET /simple/demo/ 404"
    assert entry["logger"] == "gcs_sync.requests"
    assert entry["httpRequest"] == http_request and entry["user"] == "alice"
    when = datetime.datetime.fromisoformat(entry["time"])  # RFC 3339, in UTC
    assert entry["time"].endswith("Z") and when.utcoffset() == datetime.timedelta(0)
    assert abs(when.timestamp() - record.created) < 1e-3


def test_an_exception_puts_its_traceback_in_the_message() -> None:
    try:
        {}["missing"]
    except KeyError:
        record = record_of("gcs_sync.client", logging.ERROR, "sync failed")
        record.exc_info = sys.exc_info()
    entry = formatted(record)
    assert entry["severity"] == "ERROR"
    first, *rest = entry["message"].splitlines()
    assert first == "sync failed"
    assert rest[0] == "Traceback (most recent call last):"  # what Error Reporting looks for
    assert rest[-1] == "KeyError: 'missing'"


def test_non_ascii_text_is_escaped_and_comes_back_whole() -> None:
    text = "paquet été ✓ 包 \U0001f40d \"quoted\" back\\slash"
    entry = formatted(record_of("gcs_sync.client", logging.INFO, "stored %r", text, json_fields={"file": text}))
    assert entry["message"] == f"stored {text!r}" and entry["file"] == text


@pytest.mark.parametrize("level, name", [
    (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"), (logging.ERROR, "ERROR"),
    (logging.CRITICAL, "CRITICAL"), (25, "INFO"), (5, "DEFAULT"),
])
def test_levels_map_to_cloud_logging_severities(level: int, name: str) -> None:
    assert severity(level) == name


@pytest.mark.parametrize("header, user", [
    (basic("alice", "s3cret"), "alice"),
    (basic("alice", "pass:with:colons"), "alice"),
    (basic("", "s3cret"), ""),
    ("basic " + base64.b64encode(b"bob:x").decode(), "bob"),
    (None, None),
    ("Bearer abc.def", None),
    ("Basic not base64!", None),
    ("Basic " + base64.b64encode(b"an-api-token").decode(), None),  # no "user:": maybe all secret
])
def test_only_the_user_name_is_read_from_basic_credentials(header: Optional[str], user: Optional[str]) -> None:
    assert basic_user(header) == user


# -- the app, in-process -------------------------------------------------------------


def request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "httpRequest" in getattr(r, "json_fields", {})]


@pytest.mark.parametrize("bucket", ["local"], indirect=True)  # requests are logged the same on every store
def test_every_answer_gets_a_request_line_with_its_status(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http = Client(build_app(settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd)))
    sdist = make_sdist(tmp_path / "dist", "demo", "1.0").read_bytes()

    def upload(**headers: str) -> None:
        form = {":action": "file_upload", "content": (io.BytesIO(sdist), "demo-1.0.tar.gz")}
        http.post("/", data=form, headers=headers, buffered=True)

    with caplog.at_level(logging.INFO, logger="gcs_sync"):
        upload()  # no credentials
        upload(Authorization=basic(USER, WRONG_PASSWORD))
        upload(Authorization=basic(USER, PASSWORD), **{"User-Agent": "twine/6.1.0 CPython/3.11"})
        http.get("/packages/demo-1.0.tar.gz?token=in-the-query", buffered=True)
        http.get("/no/such/route", buffered=True)  # routing's own 404: no plugin sees it
        http.open("/simple/", method="DELETE", buffered=True)  # routing's 405
    lines = [(r.json_fields["httpRequest"], r.json_fields.get("user"), r.getMessage()) for r in request_records(caplog)]
    assert [(h["requestMethod"], h["requestUrl"], h["status"], user) for h, user, _ in lines] == [
        ("POST", "/", 401, None),
        ("POST", "/", 403, USER),
        ("POST", "/", 200, USER),
        ("GET", "/packages/demo-1.0.tar.gz", 200, None),
        ("GET", "/no/such/route", 404, None),
        ("DELETE", "/simple/", 405, None),
    ]
    upload_line, download_line = lines[2], lines[3]
    assert upload_line[2].startswith("POST / 200 0 B ") and upload_line[2].endswith(f" user={USER} twine/6.1.0")
    assert upload_line[0]["userAgent"] == "twine/6.1.0 CPython/3.11"
    assert download_line[0]["responseSize"] == str(len(sdist))
    assert all(h["latency"].endswith("s") and float(h["latency"][:-1]) >= 0 for h, _, _ in lines)
    assert "token" not in caplog.text and PASSWORD not in caplog.text and WRONG_PASSWORD not in caplog.text


def test_a_crashed_route_logs_one_error_with_its_traceback_and_a_500_line(caplog: pytest.LogCaptureFixture) -> None:
    app = Bottle()

    @app.route("/crash")
    def crash() -> str:
        raise KeyError("a bug")

    app.wsgi = RequestLog(app.wsgi)  # as build_app installs it
    with caplog.at_level(logging.INFO, logger="gcs_sync"):
        assert Client(app).get("/crash", buffered=True).status_code == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    entry = formatted(errors[0])  # one JSON object, not raw lines on stderr
    assert "Traceback (most recent call last):" in entry["message"] and "KeyError: 'a bug'" in entry["message"]
    [line] = request_records(caplog)
    assert line.json_fields["httpRequest"]["status"] == 500 and line.levelno == logging.WARNING


# -- real gunicorn, both tiers -------------------------------------------------------


def get(instance: Instance, path: str, authorization: Optional[str] = None) -> int:
    request = urllib.request.Request(instance.url + path)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def serve_twine_pip_and_refusals(tier: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> tuple[str, Path]:
    """A server of ``tier`` that syncs one file from the bucket, takes a twine upload,
    a pip install with credentials in the index URL, a 401, a 403 and a 404; its output."""
    bucket.put("seed-1.0.tar.gz", b"seed")  # the cold start pulls it: a sync line with a change
    instance = start_instance(
        {**bucket.env(), "TIER": tier, "PASSWORD_FILE": str(htpasswd), "AUTHENTICATE": "update,download,list",
         "LOG_LEVEL": "DEBUG"},  # every line the app has
        tmp_path / "served", tmp_path,
    )
    try:
        wheel = make_wheel(tmp_path / "dist", "logged", "1.0")
        uploaded = twine_upload(instance.url, wheel)
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        index = instance.url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/simple/"
        installed = pip_install(new_venv(tmp_path / "venv"), index, "logged==1.0")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert get(instance, "/simple/") == 401
        assert get(instance, "/simple/logged/", basic(USER, WRONG_PASSWORD)) == 403
        assert get(instance, "/nothing/here", basic(USER, PASSWORD)) == 404
    finally:
        instance.stop()
    return instance.log(), wheel


def assert_no_secret(output: str) -> None:
    for secret in (PASSWORD, WRONG_PASSWORD, basic(USER, PASSWORD).split()[1], basic(USER, WRONG_PASSWORD).split()[1]):
        assert secret not in output
    assert "authorization" not in output.lower()


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_prod_writes_only_cloud_logging_json_with_request_and_sync_lines(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    output, wheel = serve_twine_pip_and_refusals("prod", bucket, tmp_path, htpasswd)
    entries = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert all(isinstance(e["severity"], str) and isinstance(e["message"], str) for e in entries)
    assert {"gunicorn.error", "gcs_sync.app", REQUEST_LOGGER} <= {e["logger"] for e in entries}
    requests = [(e["httpRequest"]["requestMethod"], e["httpRequest"]["requestUrl"], e["httpRequest"]["status"],
                 e.get("user")) for e in entries if "httpRequest" in e]
    assert ("POST", "/", 200, USER) in requests  # twine
    assert ("GET", "/simple/logged/", 200, USER) in requests  # pip, credentials from its index URL
    assert ("GET", f"/packages/{wheel.name}", 200, USER) in requests
    assert ("GET", "/simple/", 401, None) in requests
    assert ("GET", "/simple/logged/", 403, USER) in requests
    assert ("GET", "/nothing/here", 404, USER) in requests
    [download] = [e for e in entries if e.get("httpRequest", {}).get("requestUrl") == f"/packages/{wheel.name}"]
    assert download["httpRequest"]["responseSize"] == str(wheel.stat().st_size)  # sent by sendfile, still counted
    [pulled] = [e for e in entries if "sync" in e and e["sync"]["added"]]
    assert pulled["severity"] == "INFO" and pulled["sync"]["files"]["added"] == ["seed-1.0.tar.gz"]
    assert pulled["sync"]["bucket_calls"] >= 2 and "pulled 1 (seed-1.0.tar.gz)" in pulled["message"]
    [stored] = [e for e in entries if "bucket_write" in e]
    assert stored["bucket_write"]["file"] == wheel.name and stored["bucket_write"]["bucket_calls"] >= 1
    assert stored["bucket_write"]["bytes"] == wheel.stat().st_size
    assert_no_secret(output)


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_dev_writes_readable_text_with_request_and_sync_lines(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    output, wheel = serve_twine_pip_and_refusals("dev", bucket, tmp_path, htpasswd)
    for line in output.splitlines():
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert " gcs_sync.requests: POST / 200 0 B " in output and f"user={USER} twine/" in output
    assert " gcs_sync.requests: GET /simple/ 401 " in output
    assert " gcs_sync.requests: GET /simple/logged/ 403 " in output
    assert f" gcs_sync.requests: GET /packages/{wheel.name} 200 {wheel.stat().st_size} B " in output
    assert "sync with file://" in output and ": pulled 1 (seed-1.0.tar.gz); " in output
    assert f"stored '{wheel.name}' in file://" in output and " bucket calls" in output
    assert_no_secret(output)
