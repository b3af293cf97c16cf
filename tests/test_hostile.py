"""Hostile and broken input. Each case gets a clear 4xx (pypiserver's own answer where it
has one) or stops the start with one line naming the problem; never a 5xx, and nothing is
written, neither in the bucket nor in the local folder.

Requests go to real gunicorn as raw bytes: clients normalise paths and frame bodies
properly, an attacker does not. Odd object names in the bucket are in test_sync.py
(``test_odd_object_names_are_skipped_and_logged``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Iterator, Optional

import pytest
from passlib.apache import HtpasswdFile
from werkzeug.test import Client

from gcs_sync import BucketNotFound, StoragePermissionDenied, build_app
from gcs_sync.web.guards import XMLRPC_MAX_BODY
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.packages import make_sdist, make_wheel
from testkit.servers import (
    PASSWORD,
    REPO,
    USER,
    Instance,
    clean_env,
    free_port,
    raw_http,
    start_instance,
    twine_upload,
    upload_form,
)

from .conftest import BACKENDS, new_probe, settings_for

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


# -- content: what a bucket may hold is served as it is ---------------------------------------

def test_zero_byte_and_large_packages_are_served_intact_with_their_digest(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    large = os.urandom(1 << 20) * 50  # 50 MB, put by another tool
    bucket.put("large-1.0.tar.gz", large)
    bucket.put("empty-1.0.tar.gz", b"")
    uploader = Client(build_app(settings_for(bucket, tmp_path / "uploader", PASSWORD_FILE=htpasswd)))
    reply = uploader.post("/", headers={"Authorization": AUTH}, data={
        ":action": "file_upload", "content": (io.BytesIO(b""), "empty-2.0.tar.gz"),
    })
    # An upload is opened: zero bytes are no sdist, refused before anything is stored.
    assert reply.status_code == 400 and "Bad distribution: " in html.unescape(reply.get_data(as_text=True))
    assert bucket.get("empty-2.0.tar.gz") is None
    assert not any("empty-2.0.tar.gz" in name for name in bucket.record_names())
    # Put there by another tool, a zero-byte file is still served as it is.
    bucket.put("empty-2.0.tar.gz", b"")
    app = Client(build_app(settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd)))
    for project, files in {"large": {"large-1.0.tar.gz": large},
                           "empty": {"empty-1.0.tar.gz": b"", "empty-2.0.tar.gz": b""}}.items():
        page = app.get(f"/simple/{project}/").get_data(as_text=True)
        links = dict(re.findall(r'href="[^"#]*/packages/([^"#]+)#sha256=([0-9a-f]+)"', page))
        assert links == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        for name, data in files.items():
            served = app.get(f"/packages/{name}")
            assert served.status_code == 200 and served.get_data() == data


# -- requests: uploads, bodies, paths ------------------------------------------------------

LIMIT = 1 << 20  # MAX_UPLOAD_SIZE of the servers below: 1 MiB
BOUNDARY = "hostileboundary"


def multipart(*fields: tuple[str, Optional[str], bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body; a field with a filename is a file."""
    body = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def upload_of(filename: str, data: bytes = b"package bytes") -> bytes:
    return multipart((":action", None, b"file_upload"), ("content", filename, data))


def post(body: bytes, *, content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
         content_length: Optional[str] = "auto", extra: str = "", send: Optional[bytes] = None) -> bytes:
    """A POST / with credentials. ``send`` replaces the body actually sent (a truncated
    one, say) while Content-Length still announces ``body``; None for Content-Length
    leaves the header out."""
    length = str(len(body)) if content_length == "auto" else content_length
    head = f"POST / HTTP/1.1\r\nHost: index\r\nAuthorization: {AUTH}\r\nContent-Type: {content_type}\r\n{extra}"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode() + (body if send is None else send)


def get(path: str, *, anonymous: bool = False) -> bytes:
    auth = "" if anonymous else f"Authorization: {AUTH}\r\n"
    return f"GET {path} HTTP/1.1\r\nHost: index\r\n{auth}\r\n".encode()


def rpc(body: bytes, content_length: Optional[int] = None) -> bytes:
    """An anonymous XML-RPC call (pip search), as anyone may send it under AUTHENTICATE=update."""
    length = len(body) if content_length is None else content_length
    head = f"POST /RPC2 HTTP/1.1\r\nHost: index\r\nContent-Type: text/xml\r\nContent-Length: {length}\r\n\r\n"
    return head.encode() + body


def search_call(*params: object) -> bytes:
    return xmlrpc.client.dumps(params, "search").encode()


def chunked(data: bytes) -> bytes:
    """``data`` as one chunk of HTTP/1.1 chunked framing, and the last chunk."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    request: bytes
    status: int
    says: str  # a fragment of the reply's body (HTML escapes undone)
    # False: the client keeps its side open, and the server must answer without waiting
    # for more (a request whose body is not sent at all, or not to its end).
    half_close: bool = True


TEMP = ".demo-1.0-py3-none-any.whl.0123456789abcdef0123456789abcdef.part"  # a staged upload's name

UPLOAD_NAMES = [
    # (filename in the form, what pypiserver or the index answers)
    ("../x-1.0.tar.gz", "Bad filename: ../x-1.0.tar.gz"),
    ("a/b-1.0.tar.gz", "Bad filename: a/b-1.0.tar.gz"),
    ("a\\b-1.0.tar.gz", "Bad filename: a\\b-1.0.tar.gz"),
    ("/abs-1.0.tar.gz", "Bad filename: /abs-1.0.tar.gz"),
    ("%2e%2e%2fx-1.0.tar.gz", "Bad filename: %2e%2e%2fx-1.0.tar.gz"),
    ("nul\x00-1.0.tar.gz", "Malformed request body: Header value must not contain control characters"),
    ("", "Bad filename: "),
    ("notapackage.txt", "Bad filename: notapackage.txt"),
    # Stock pypiserver takes these two: a 500 (name too long to write), and a file that is
    # stored but never listed.
    ("x" * 300 + "-1.0.tar.gz", "Bad filename: xxx"),
    (".hidden-1.0.tar.gz", "Bad filename: .hidden-1.0.tar.gz"),
]

GOOD = upload_of("good-1.0.tar.gz")

CASES = [
    *[Case(f"filename {name[:24]!r}", post(upload_of(name)), 400, says) for name, says in UPLOAD_NAMES],
    Case("unrelated signature", post(multipart((":action", None, b"file_upload"), ("content", "sig-1.0.tar.gz", b"x"),
                                               ("gpg_signature", "other-1.0.tar.gz.asc", b"x"))), 400, "Unrelated signature"),
    Case("no content field", post(multipart((":action", None, b"file_upload"))), 400, "Missing 'content' file-field!"),
    Case("content not a file", post(multipart((":action", None, b"file_upload"), ("content", None, b"x"))), 400,
         "Missing 'content' file-field!"),
    # Stock pypiserver stores the part that arrived as the package: a truncated file.
    Case("truncated body", post(GOOD, send=GOOD[: len(GOOD) // 2]), 400, "Incomplete request body"),
    Case("wrong boundary", post(GOOD, content_type="multipart/form-data; boundary=another"), 400,
         "Missing ':action' field!"),
    # Stock pypiserver: a 500 (the multipart parser raises ValueError).
    Case("no boundary", post(GOOD, content_type="multipart/form-data"), 400, "Malformed request body"),
    Case("garbage body", post(os.urandom(4096)), 400, "Missing ':action' field!"),
    Case("no :action", post(multipart(("content", "good-1.0.tar.gz", b"x"))), 400, "Missing ':action' field!"),
    Case("unknown :action", post(multipart((":action", None, b"explode"), ("content", "good-1.0.tar.gz", b"x"))), 400,
         "Unsupported ':action' field: explode"),
    Case("doc_upload not a zip", post(multipart((":action", None, b"doc_upload"), ("content", "docs.zip", b"x"))), 400,
         "not a zip file"),
    Case("remove_pkg without version", post(multipart((":action", None, b"remove_pkg"), ("name", None, b"demo"))), 400,
         "Missing 'name'/'version' fields"),
    Case("remove_pkg of ../demo", post(multipart((":action", None, b"remove_pkg"), ("name", None, b"../demo"),
                                                 ("version", None, b"1.0"))), 404, "../demo (1.0) not found"),
    # Refused on the Content-Length alone, before a byte of the body is read: none is
    # sent, and a server that waited for it would never answer. First bottle's own limit
    # for a form that is not multipart (100 KB), under MAX_UPLOAD_SIZE; then ours.
    Case("large urlencoded form", post(b"", content_length="200000", content_type="application/x-www-form-urlencoded"),
         413, "Request to large", half_close=False),
    Case("Content-Length over the limit", post(b"", content_length=str(LIMIT + 1)), 413,
         f"over this index's limit of {LIMIT} bytes (MAX_UPLOAD_SIZE)", half_close=False),
    # gunicorn undoes the chunked framing, then bottle looks for it again: stock answers 400.
    Case("chunked body", post(chunked(GOOD), content_length=None, extra="Transfer-Encoding: chunked\r\n"), 400,
         "Error while parsing chunked transfer body."),
    # A body framed twice gets through both: with no length known, it is counted as it is
    # read, and refused once past the limit (here in its last read, so that no unread
    # bytes make the server's close a reset that would lose the answer).
    Case("chunked body over the limit",
         post(chunked(chunked(upload_of("big-1.0.tar.gz", b"x" * LIMIT))), content_length=None,
              extra="Transfer-Encoding: chunked\r\n"),
         413, f"over this index's limit of {LIMIT} bytes (MAX_UPLOAD_SIZE)"),
    # gunicorn's own answers.
    Case("Content-Length not a number", post(GOOD, content_length="many"), 400, "Invalid HTTP Header: 'CONTENT-LENGTH'"),
    Case("Content-Length negative", post(GOOD, content_length="-1"), 400, "Invalid HTTP Header: 'CONTENT-LENGTH'"),
    # Paths: only the package files of the index are ever served.
    *[Case(f"GET {path}", get(path), 404, "does not exist") for path in [
        "/packages/../.gcs_sync/state.json",
        "/packages/%2e%2e/.gcs_sync/state.json",
        "/packages/..%2f..%2fetc%2fpasswd",
        "/packages/.gcs_sync/state.json",
        "/packages/.gcs_sync%2fstate.json",
        "/packages/.gcs_sync/lock",
        "/packages//etc/passwd",
        "/packages/%2Fetc%2Fpasswd",
        "/packages/demo-1.0-py3-none-any.whl/../../.gcs_sync/state.json",
        f"/packages/{TEMP}",
        "/packages/.hidden-1.0.tar.gz",
    ]],
    Case("GET /../../etc/passwd", get("/../../etc/passwd"), 404, "Not Found"),
    Case("GET /simple/../../etc/passwd", get("/simple/../../etc/passwd"), 404, "Not Found"),
    # Control characters in a path, without credentials. Stock pypiserver redirects
    # /simple/NAME with the raw character in the Location header: a 500 (a NUL: with a
    # traceback); the others got odd redirects.
    *[Case(f"anonymous GET {path}", get(path, anonymous=True), 404, "no project or file name has a control character")
      for path in [
        "/simple/%01", "/simple/%00", "/simple/a%1fb", "/simple/%7f", "/simple/%c2%85", "/simple/%0a/",
        "/simple/a%00b/", "/packages/%01", "/packages%01", "/%01", "/%01/json", "/%0d%0aSet-Cookie:x=y",
        "/simple/" + "a" * 3000 + "%01",
    ]],
    # The host pypiserver builds redirects from: the same 500s, or urlparse's ValueError.
    *[Case(f"anonymous GET {path} with {header!r}", f"GET {path} HTTP/1.1\r\n{header}\r\n\r\n".encode(), 400,
           "header is not a host name")
      for path in ["/simple", "/demo", "/simple/Demo/"]
      for header in ["Host: in\x01dex", "Host: [::1"]],
    # X-Forwarded-Host is dropped before the app sees it (forwarded.py), whatever it holds.
    *[Case(f"anonymous GET {path} with a bad X-Forwarded-Host",
           f"GET {path} HTTP/1.1\r\nHost: index\r\nX-Forwarded-Host: in\x7fdex\r\n\r\n".encode(), 301, "")
      for path in ["/simple", "/simple/Demo/"]],
    Case("anonymous GET of a 3,000-character name", get("/simple/" + "a" * 3000 + "/", anonymous=True), 404,
         "does not exist"),
    # XML-RPC (pip search), without credentials. Stock pypiserver answers these with a
    # 500 (IndexError, AttributeError), or 200 and no body for another method.
    Case("XML-RPC <methodCall/>", rpc(b"<methodCall/>"), 400, "Malformed XML-RPC call: no <methodName>"),
    Case("XML-RPC search without a string", rpc(search_call()), 400, "a search needs a <string>"),
    Case("XML-RPC search with an empty string", rpc(search_call("")), 400, "a search needs a <string>"),
    Case("XML-RPC search of a number", rpc(search_call(42)), 400, "a search needs a <string>"),
    Case("XML-RPC unknown method", rpc(xmlrpc.client.dumps((), "list_packages").encode()), 400,
         "unsupported method 'list_packages'"),
    Case("XML-RPC method name not text", rpc(b"<methodCall><methodName><b/></methodName></methodCall>"), 400,
         "no <methodName>"),
    Case("XML-RPC not XML-RPC", rpc(b"<search><string>x</string></search>"), 400, "the root element is <search>"),
    Case("XML-RPC not XML", rpc(b"search demo"), 400, "not well-formed, safe XML"),
    Case("XML-RPC entity", rpc(b'<!DOCTYPE m [<!ENTITY e "search">]><methodCall><methodName>&e;</methodName>'
                               b"</methodCall>"), 400, "not well-formed, safe XML"),
    Case("XML-RPC empty body", rpc(b""), 400, "not well-formed, safe XML"),
    # Refused on the Content-Length alone (no body is sent): a DOM of many small elements
    # costs the worker about 60 times the body's size.
    Case("XML-RPC body over its limit", rpc(b"", content_length=XMLRPC_MAX_BODY + 1), 413,
         f"over this index's limit of {XMLRPC_MAX_BODY} bytes (the XML-RPC limit)", half_close=False),
]


# -- one gunicorn instance per driver, shared by the cases ---------------------------------

@dataclasses.dataclass
class Server:
    instance: Instance
    bucket: BucketProbe

    def written(self) -> tuple[dict[str, Optional[bytes]], dict[str, bytes]]:
        """What a request could have written: the bucket's objects and the folder's files
        (temps included), bookkeeping aside."""
        folder = self.instance.folder
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and ".gcs_sync" not in p.parts}
        return {name: self.bucket.get(name) for name in self.bucket.names()}, files


def _write_htpasswd(path: Path) -> Path:
    users = HtpasswdFile(str(path), new=True)
    users.set_password(USER, PASSWORD)
    users.save()
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"hostile-{request.param}")
    bucket = new_probe(request.param, request, tmp)
    env = {**bucket.env(), "PASSWORD_FILE": str(_write_htpasswd(tmp / "htpasswd")), "MAX_UPLOAD_SIZE": str(LIMIT)}
    instance = start_instance(env, tmp / "packages", tmp, workers=1)
    try:
        wheel = make_wheel(tmp / "dist", "demo", "1.0")
        assert upload_form(instance.url, wheel.name, wheel.read_bytes())[0] == 200
        (instance.folder / TEMP).write_bytes(b"an upload being staged")
        yield Server(instance, bucket)
    finally:
        instance.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_request_is_refused_and_writes_nothing(server: Server, case: Case) -> None:
    before, log_before = server.written(), len(server.instance.log())
    status, body = raw_http(server.instance.url, case.request, half_close=case.half_close)
    text = html.unescape(body.decode(errors="replace"))
    assert status == case.status and case.says in text, text
    assert server.written() == before
    assert "Traceback" not in server.instance.log()[log_before:]


def test_uploads_within_the_limit_still_work(server: Server, tmp_path: Path) -> None:
    # A real sdist (uploads are opened) just under the limit: random filler does not
    # compress, and the form around it is well under 1,000 bytes.
    data = make_sdist(tmp_path, "fits", "1.0", filler=os.urandom(LIMIT - 6000)).read_bytes()
    assert LIMIT - 6000 < len(data) <= LIMIT - 1000
    status, _ = raw_http(server.instance.url, post(upload_of("fits-1.0.tar.gz", data)))
    assert status == 200
    assert server.bucket.get("fits-1.0.tar.gz") == data
    assert server.instance.get("/packages/fits-1.0.tar.gz") == (200, data)


def test_pip_search_still_works(server: Server) -> None:
    index = xmlrpc.client.ServerProxy(server.instance.url + "/RPC2")
    found = index.search({"name": ["dem"], "summary": ["dem"]}, "or")  # what pip search sends
    assert [(hit["name"], hit["version"]) for hit in found] == [("demo", "1.0")]


@pytest.mark.slow
def test_twine_is_told_the_limit(server: Server, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "toolarge", "1.0", value=os.urandom(LIMIT).hex())  # > LIMIT compressed
    before = server.written()
    refused = twine_upload(server.instance.url, wheel)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "413" in output and f"Request body over MAX_UPLOAD_SIZE ({LIMIT} bytes)" in output  # our status line
    assert server.written() == before


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_bad_content_length_is_a_400_under_any_wsgi_server(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    """gunicorn refuses it itself (above); another server may pass it on."""
    app = Client(build_app(settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd)))
    reply = app.post("/", headers={"Authorization": AUTH}, data=b"x", environ_overrides={"CONTENT_LENGTH": "many"})
    assert reply.status_code == 400 and "Bad Content-Length: 'many'" in html.unescape(reply.get_data(as_text=True))


def test_the_longest_filename_is_stored_and_served(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    """255 characters, the most a folder takes: its temporary files (".NAME.RANDOM.part")
    must not be longer, here, in the local bucket or in another instance's folder."""
    name = "a" * (255 - len("-1.0.tar.gz")) + "-1.0.tar.gz"
    sdist = make_sdist(tmp_path / "dist", "a" * (255 - len("-1.0.tar.gz")), "1.0")
    assert sdist.name == name
    long = sdist.read_bytes()
    app = Client(build_app(settings_for(bucket, tmp_path / "packages", PASSWORD_FILE=htpasswd)))
    reply = app.post("/", headers={"Authorization": AUTH},
                     data={":action": "file_upload", "content": (io.BytesIO(long), name)})
    assert reply.status_code == 200 and bucket.get(name) == long
    other = Client(build_app(settings_for(bucket, tmp_path / "other", PASSWORD_FILE=htpasswd)))
    assert other.get(f"/packages/{name}").get_data() == long


# -- start-up: a bucket that cannot be used stops the start; an outage does not --------------

def test_a_missing_bucket_stops_the_start(bucket: BucketProbe, tmp_path: Path) -> None:
    settings = settings_for(bucket, tmp_path / "packages")
    bucket.remove_bucket()  # gone since the settings were read (for a folder, they check it too)
    with pytest.raises(BucketNotFound) as caught:
        build_app(settings)
    assert bucket.name in str(caught.value) and "\n" not in str(caught.value)


def _gunicorn_start(env: dict[str, str], tmp_path: Path, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """gunicorn as a deployment starts it; returns once it has stopped (it must)."""
    full = clean_env({**env, "LOCAL_PACKAGE_DIRECTORY": str(tmp_path / "packages")})
    for name in drop:
        full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "main:get_app()", "--chdir", str(REPO), "-b", "127.0.0.1:0", "-w", "2"],
        env=full, capture_output=True, text=True, timeout=60,
    )


def _error_lines(result: subprocess.CompletedProcess, prefix: str) -> list[str]:
    """The lines starting with ``prefix``: one per worker, each the same, the whole error.
    (When both workers fail at once, gunicorn 23's arbiter may add a traceback of its own
    HaltServer on the way out.)"""
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(set(lines)) <= 1, lines
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_gunicorn_stops_with_one_line_naming_a_missing_bucket(bucket: BucketProbe, tmp_path: Path) -> None:
    bucket.remove_bucket()
    result = _gunicorn_start(bucket.env(), tmp_path)
    assert result.returncode != 0
    scheme = {"gcs": "gs", "s3": "s3"}[bucket.backend]
    assert _error_lines(result, f"gcs_sync cannot use the bucket: list '{scheme}://{bucket.name}/packages/' "
                                "failed: "), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_gunicorn_stops_with_one_line_naming_a_missing_bucket_folder(bucket: BucketProbe, tmp_path: Path) -> None:
    result = _gunicorn_start({**bucket.env(), "BUCKET_NAME": str(tmp_path / "no-such-folder")}, tmp_path)
    assert result.returncode != 0
    assert _error_lines(result, f"gcs_sync configuration error: BUCKET_NAME: local bucket folder "
                                f"{tmp_path / 'no-such-folder'} does not exist"), result.stderr


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_credentials_the_store_refuses_stop_the_start(bucket: BucketProbe, s3_server: str, tmp_path: Path) -> None:
    """moto checks credentials once told to (its IAM is empty, so ours are unknown)."""
    def checked_requests_after(count: str) -> None:
        urllib.request.urlopen(urllib.request.Request(
            f"{s3_server}/moto-api/reset-auth", data=count.encode(), headers={"Content-Type": "text/plain"},
        ), timeout=10)

    settings = settings_for(bucket, tmp_path / "packages")
    checked_requests_after("0")
    try:
        with pytest.raises(StoragePermissionDenied, match=f"list 's3://{bucket.name}/packages/' failed: .*"
                                                          "InvalidAccessKeyId"):
            build_app(settings)
    finally:
        checked_requests_after("inf")  # moto's default: never


@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_a_bucket_the_credentials_may_not_list_stops_the_start(
    bucket: BucketProbe, gcs_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GCS emulator has no permissions: a proxy in front of it answers the listing
    as GCS answers an account without storage.objects.list."""
    host, port = gcs_emulator.removeprefix("http://").split(":")
    denied = json.dumps({"error": {"code": 403, "message": "alice does not have storage.objects.list access"}})
    with FaultProxy(host, int(port)) as proxy:
        proxy.add_rule("GET", rf"/b/{bucket.name}/o\b", Respond(403, denied.encode(), {"Content-Type": "application/json"}))
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        with pytest.raises(StoragePermissionDenied, match="storage.objects.list access"):
            build_app(settings_for(bucket, tmp_path / "packages"))


GCS_CREDENTIALS = {
    "missing file": lambda tmp: str(tmp / "nope.json"),
    "malformed file": lambda tmp: _write(tmp / "key.json", b'{"type": "service_account",'),
    "a folder": lambda tmp: str(tmp),
}


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
@pytest.mark.parametrize("credentials", GCS_CREDENTIALS)
def test_gcs_credentials_that_cannot_be_read_stop_the_start(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials: str
) -> None:
    """Without the emulator, as in production: the SDK reads the key file before any request."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", GCS_CREDENTIALS[credentials](tmp_path))
    with pytest.raises(StoragePermissionDenied, match=f"connect 'gs://{bucket.name}/packages/' failed: cannot "
                                                      "load the credentials: "):
        build_app(settings_for(bucket, tmp_path / "packages"))


S3_CREDENTIALS = {
    "malformed file": ({"AWS_SHARED_CREDENTIALS_FILE": b"not an ini file\n"}, "ConfigParseError"),
    "half a key": ({"AWS_SHARED_CREDENTIALS_FILE": b"[default]\naws_access_key_id = AKIA\n"}, "PartialCredentialsError"),
    "unknown profile": ({"AWS_PROFILE": "nope"}, "ProfileNotFound"),
    "none at all": ({}, "NoCredentialsError"),
}


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
@pytest.mark.parametrize("credentials", S3_CREDENTIALS)
def test_s3_credentials_that_cannot_be_read_stop_the_start(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials: str
) -> None:
    import boto3

    variables, error = S3_CREDENTIALS[credentials]
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the credentials it found first
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # they would win over any file
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata to ask
    for name, value in variables.items():
        monkeypatch.setenv(name, _write(tmp_path / name, value) if isinstance(value, bytes) else value)
    with pytest.raises(StoragePermissionDenied, match=f"'s3://{bucket.name}/packages/' failed: {error}"):
        build_app(settings_for(bucket, tmp_path / "packages"))


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_gunicorn_stops_with_one_line_for_unreadable_credentials(bucket: BucketProbe, tmp_path: Path) -> None:
    env = {**bucket.env(), "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")}
    result = _gunicorn_start(env, tmp_path, drop=("STORAGE_EMULATOR_HOST",))
    assert result.returncode != 0
    assert _error_lines(result, f"gcs_sync cannot use the bucket: connect 'gs://{bucket.name}/packages/' failed: "
                                f"cannot load the credentials: DefaultCredentialsError: File {tmp_path / 'nope.json'} "
                                "was not found"), result.stderr


OUTAGE_VARIABLE = {"gcs": "STORAGE_EMULATOR_HOST", "s3": "AWS_ENDPOINT_URL"}


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)
def test_an_outage_at_start_up_does_not_stop_it(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: the bucket is unreachable, not misconfigured. The
    instance starts and serves its local copy; the check cost one STORAGE_TIMEOUT."""
    monkeypatch.setenv(OUTAGE_VARIABLE[bucket.backend], f"http://127.0.0.1:{free_port()}")
    settings = settings_for(bucket, tmp_path / "packages", STORAGE_TIMEOUT=1)
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "kept-1.0.tar.gz").write_bytes(b"kept")
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):
        http = Client(build_app(settings))
    assert "the bucket did not answer at start-up; starting anyway" in caplog.text
    assert http.get("/health").status_code == 200
    assert http.get("/simple/").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gcs"], indirect=True)
def test_gunicorn_starts_during_an_outage(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    env = {**bucket.env(), "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}", "STORAGE_TIMEOUT": "1",
           "PASSWORD_FILE": str(htpasswd)}
    instance = start_instance(env, tmp_path / "packages", tmp_path, workers=1)
    try:
        assert instance.get("/health") == (200, b"Ok")
        assert "the bucket did not answer at start-up" in instance.log()
    finally:
        instance.stop()
