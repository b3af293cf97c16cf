"""The modern simple API (gcs_sync/web/simple_api.py): content negotiation (PEP 691), the
HTML attributes (PEP 503/592/658/714), the JSON pages (PEP 691/700/714) and the core
metadata files, as a client sees them."""

from __future__ import annotations

import base64
import hashlib
import html.parser
import importlib.util
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import jsonschema
import pypiserver
import pytest
from werkzeug.test import Client

from gcs_sync.records.record import FileRecord
from gcs_sync.sync.state import StateFile
from gcs_sync.web.simple_api import HTML_V1, JSON_V1, TEXT_HTML, negotiate
from testkit.buckets import BucketProbe
from testkit.packages import make_wheel

from .test_app import AUTH, App

HTML_TYPE = "text/html; charset=utf-8"
UPLOADED = "2026-12-04T10:00:00.123Z"
UPLOADED_PEP700 = "2026-12-04T10:00:00.123000Z"


# -- negotiation: a pure table --------------------------------------------------------------

@pytest.mark.parametrize(("accept", "fmt", "chosen"), [
    (None, None, TEXT_HTML),  # no Accept: HTML, as before
    ("", None, TEXT_HTML),
    ("text/html", None, TEXT_HTML),
    (JSON_V1, None, JSON_V1),
    (HTML_V1, None, HTML_V1),
    ("application/vnd.pypi.simple.latest+json", None, JSON_V1),
    ("application/vnd.pypi.simple.latest+html", None, HTML_V1),
    ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", None, JSON_V1),  # media types are case-insensitive
    # pip's header: JSON preferred, HTML accepted
    (f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01", None, JSON_V1),
    (f"text/html;q=0.5, {JSON_V1}", None, JSON_V1),
    (f"{JSON_V1};q=0.2, text/html;q=0.9", None, TEXT_HTML),
    # equal q: the client's order, then HTML
    (f"{JSON_V1}, text/html", None, JSON_V1),
    (f"text/html, {JSON_V1}", None, TEXT_HTML),
    ("*/*", None, TEXT_HTML),
    ("application/*", None, HTML_V1),
    ("text/*", None, TEXT_HTML),
    (f"*/*;q=0.1, {JSON_V1}", None, JSON_V1),
    # q=0: not acceptable, even through a wildcard
    (f"{JSON_V1};q=0, */*", None, TEXT_HTML),
    ("text/html;q=0, application/*;q=0", None, None),
    (f"*/*;q=0, {JSON_V1}", None, JSON_V1),
    ("text/html;q=0", None, None),
    # unknown or unreadable types: 406
    ("application/json", None, None),
    ("image/png, application/xml;q=0.9", None, None),
    ("garbage", None, None),
    ("text/html;q=abc", None, None),
    ("application/vnd.pypi.simple.v2+json", None, None),
    # ?format= overrides Accept
    ("text/html", JSON_V1, JSON_V1),
    (JSON_V1, "text/html", TEXT_HTML),
    (JSON_V1, HTML_V1, HTML_V1),
    (None, "application/vnd.pypi.simple.latest+json", JSON_V1),
    ("text/html", "application/json", None),
    (JSON_V1, "", JSON_V1),  # an empty format is no format
])
def test_negotiation(accept: Optional[str], fmt: Optional[str], chosen: Optional[str]) -> None:
    assert negotiate(accept, fmt) == chosen


# -- JSON schema (PEP 691 v1 + PEP 700 + PEP 714) ---------------------------------------------

_META = {
    "type": "object", "required": ["api-version"],
    "properties": {"api-version": {"type": "string", "pattern": r"^1\.[0-9]+$"}},
}
_DIGEST = {"type": "string", "pattern": "^[0-9a-f]+$"}
_METADATA = {"oneOf": [
    {"type": "boolean"},
    {"type": "object", "additionalProperties": _DIGEST},
]}
INDEX_SCHEMA = {
    "type": "object", "required": ["meta", "projects"], "additionalProperties": False,
    "properties": {
        "meta": _META,
        "projects": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}},
        }},
    },
}
PROJECT_SCHEMA = {
    "type": "object", "required": ["meta", "name", "files", "versions"],
    "properties": {
        "meta": _META,
        "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"},  # normalized
        "versions": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "files": {"type": "array", "items": {
            "type": "object",
            "required": ["filename", "url", "hashes", "size"],  # size: PEP 700, required at 1.1
            "properties": {
                "filename": {"type": "string"},
                "url": {"type": "string", "pattern": "^[^#]+$"},
                "hashes": {"type": "object", "additionalProperties": _DIGEST},
                "requires-python": {"type": "string"},
                "core-metadata": _METADATA,
                "dist-info-metadata": _METADATA,
                "gpg-sig": {"type": "boolean"},
                "yanked": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
                "size": {"type": "integer", "minimum": 0},
                "upload-time": {
                    "type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
                },
            },
        }},
    },
}


# -- an app with records --------------------------------------------------------------------

pytestmark_local = pytest.mark.parametrize("bucket", ["local"], indirect=True)


class Links(html.parser.HTMLParser):
    """The <a> elements of a page: attributes (unescaped, as a client reads them) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, Optional[str]]] = []
        self.meta: dict[str, Optional[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
        if tag == "meta" and dict(attrs).get("name"):
            self.meta[str(dict(attrs)["name"])] = dict(attrs).get("content")

    def handle_data(self, data: str) -> None:
        if self.links and self.lasttag == "a" and "text" not in self.links[-1]:
            self.links[-1]["text"] = data

    @classmethod
    def of(cls, page: str) -> "Links":
        parser = cls()
        parser.feed(page)
        return parser


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name)


def seed_record(app: App, filename: str, *, metadata: Optional[bytes] = None, **fields: Any) -> FileRecord:
    """A record of our choosing (a yank, a Requires-Python) in place of the upload's: in
    the state, with its core metadata file in the folder. Only this worker sees it (the
    bucket keeps the upload's), until the next check."""
    folder = app.client.folder
    state = StateFile(folder.control, app.driver.url)
    entry = state.load()[filename]
    data = (folder.path / filename).read_bytes()
    record = FileRecord(
        filename=filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(), upload_time=UPLOADED,
        metadata_sha256=None if metadata is None else hashlib.sha256(metadata).hexdigest(), **fields,
    )
    if metadata is not None:
        folder.write_metadata(filename, metadata)
    state.record(filename, entry.with_record(record, entry.record_version))
    return record


def forget_record(app: App, filename: str) -> None:
    """A file whose record is not known yet (a sync computes it later)."""
    state = StateFile(app.client.folder.control, app.driver.url)
    state.record(filename, state.load()[filename].with_record(None, None))


@pytest.fixture
def app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> App:
    return quiet_app(bucket, tmp_path, htpasswd)


def quiet_app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path, **overrides: Any) -> App:
    """An app whose first check is done and whose next is an hour away: the records seeded
    here stay as written (a check would take the bucket's)."""
    app = App(bucket, tmp_path / "packages", htpasswd, SYNC_INTERVAL=3600, **overrides)
    app.client.sync()
    assert app.client.is_fresh()
    return app


@pytest.fixture
def demo(app: App, tmp_path: Path) -> dict[str, Any]:
    """Project demo: 1.0 (a wheel with metadata and Requires-Python), 2.0 (a yanked wheel
    with metadata), 0.5 (a wheel whose record is not known yet)."""
    one = make_wheel(tmp_path / "dist", "demo", "1.0")
    two = make_wheel(tmp_path / "dist", "demo", "2.0")
    unknown = make_wheel(tmp_path / "dist", "demo", "0.5")
    for path in (one, two, unknown):
        assert app.upload(path).status_code == 200
    forget_record(app, unknown.name)
    return {
        "one": one, "two": two, "unknown": unknown,
        "one_record": seed_record(app, one.name, metadata=wheel_metadata(one), requires_python=">=3.8"),
        "two_record": seed_record(app, two.name, metadata=wheel_metadata(two), yanked=True,
                                  yank_reason='broken "<build>" & more'),
    }


def get(app: App, path: str, accept: Optional[str] = None, auth: bool = False, **kwargs: Any):
    headers = {} if accept is None else {"Accept": accept}
    if auth:
        headers.update(AUTH)
    return app.http.get(path, headers=headers, **kwargs)


# -- HTML -------------------------------------------------------------------------------------

@pytestmark_local
def test_html_links_are_pypiservers_plus_the_known_attributes(app: App, demo: dict[str, Any]) -> None:
    reply = get(app, "/simple/demo/")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == HTML_TYPE
    assert reply.headers["Vary"] == "Accept"
    page = reply.get_data(as_text=True)
    parsed = Links.of(page)
    assert parsed.meta["pypi:repository-version"] == "1.1"

    # Same hrefs, order and text as stock pypiserver over the same files.
    stock = Client(pypiserver.app(roots=[str(app.folder)], backend_arg="simple-dir", disable_fallback=True,
                                  authenticate=[], password_file="."))
    stock_links = Links.of(stock.get("/simple/demo/").get_data(as_text=True)).links
    assert [(a["href"], a["text"]) for a in parsed.links] == [(a["href"], a["text"]) for a in stock_links]
    assert [a["text"] for a in parsed.links] == [demo["unknown"].name, demo["one"].name, demo["two"].name]

    unknown, one, two = parsed.links
    assert set(unknown) == {"href", "text"}  # no record yet: nothing more is known
    one_digest = f"sha256={demo['one_record'].metadata_sha256}"
    assert one["data-requires-python"] == ">=3.8" and "data-yanked" not in one
    assert one["data-core-metadata"] == one["data-dist-info-metadata"] == one_digest
    assert two["data-yanked"] == 'broken "<build>" & more'
    # Escaped in the markup itself.
    assert 'data-requires-python="&gt;=3.8"' in page
    assert 'data-yanked="broken &quot;&lt;build&gt;&quot; &amp; more"' in page


@pytestmark_local
def test_a_yank_without_a_reason_is_an_empty_attribute(app: App, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    seed_record(app, wheel.name, yanked=True)
    page = get(app, "/simple/demo/").get_data(as_text=True)
    assert 'data-yanked=""' in page and "data-core-metadata" not in page
    files = get(app, "/simple/demo/", JSON_V1).json["files"]
    assert files[0]["yanked"] is True and files[0]["core-metadata"] is False


@pytestmark_local
def test_the_index_page_carries_the_repository_version(app: App, demo: dict[str, Any]) -> None:
    reply = get(app, "/simple/")
    assert reply.headers["Content-Type"] == HTML_TYPE and reply.headers["Vary"] == "Accept"
    parsed = Links.of(reply.get_data(as_text=True))
    assert parsed.meta["pypi:repository-version"] == "1.1"
    assert [(a["href"], a["text"]) for a in parsed.links] == [("demo/", "demo")]


@pytestmark_local
def test_the_v1_html_type_is_answered_as_such(app: App, demo: dict[str, Any]) -> None:
    reply = get(app, "/simple/demo/", HTML_V1)
    assert reply.headers["Content-Type"] == HTML_V1
    assert len(Links.of(reply.get_data(as_text=True)).links) == 3


@pytestmark_local
def test_a_page_served_again_follows_every_change_to_its_project(app: App, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are kept as rendered (page_cache.py) only while the project's files are the
    same: an upload, a yank and a removal each show on the next request, in both types,
    and a page asked for under another path prefix links from there."""
    import gcs_sync.web.simple_api as simple_api

    renders: list[str] = []
    real_render = simple_api.render_project_html
    monkeypatch.setattr(simple_api, "render_project_html",
                        lambda project, files: renders.append(project) or real_render(project, files))
    assert app.upload(make_wheel(tmp_path / "dist", "demo", "1.0")).status_code == 200
    assert app.upload(make_wheel(tmp_path / "dist", "other", "1.0")).status_code == 200
    first = get(app, "/simple/demo/").get_data(as_text=True)
    assert get(app, "/simple/demo/").get_data(as_text=True) == first and renders == ["demo"]  # the kept page
    other = get(app, "/simple/other/", JSON_V1).json
    assert app.upload(make_wheel(tmp_path / "dist", "demo", "2.0")).status_code == 200
    names = ["demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"]
    assert [a["text"] for a in Links.of(get(app, "/simple/demo/").get_data(as_text=True)).links] == names
    assert [f["filename"] for f in get(app, "/simple/demo/", JSON_V1).json["files"]] == names
    assert get(app, "/simple/other/", JSON_V1).json == other  # another project's change: the same page
    seed_record(app, names[0], yanked=True, yank_reason="broken")
    assert 'data-yanked="broken"' in get(app, "/simple/demo/").get_data(as_text=True)
    assert get(app, "/simple/demo/", JSON_V1).json["files"][0]["yanked"] == "broken"
    assert app.http.post("/", data={":action": "remove_pkg", "name": "demo", "version": "2.0"},
                         headers=AUTH).status_code == 200
    assert [a["text"] for a in Links.of(get(app, "/simple/demo/").get_data(as_text=True)).links] == names[:1]
    mounted = app.http.get("/simple/demo/", environ_overrides={"SCRIPT_NAME": "/mirror"}).get_data(as_text=True)
    assert Links.of(mounted).links[0]["href"].startswith("/mirror/packages/" + names[0])
    assert Links.of(get(app, "/simple/demo/").get_data(as_text=True)).links[0]["href"].startswith(
        "/packages/" + names[0])


# -- JSON -------------------------------------------------------------------------------------

@pytestmark_local
def test_json_index(app: App, demo: dict[str, Any], tmp_path: Path) -> None:
    assert app.upload(make_wheel(tmp_path / "dist", "Other.Name", "1.0")).status_code == 200
    reply = get(app, "/simple/", JSON_V1)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == JSON_V1 and reply.headers["Vary"] == "Accept"
    jsonschema.validate(reply.json, INDEX_SCHEMA)
    assert reply.json == {"meta": {"api-version": "1.1"}, "projects": [{"name": "demo"}, {"name": "other-name"}]}


@pytestmark_local
def test_json_project(app: App, demo: dict[str, Any]) -> None:
    reply = get(app, "/simple/demo/", "application/vnd.pypi.simple.latest+json")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == JSON_V1 and reply.headers["Vary"] == "Accept"
    page = reply.json
    jsonschema.validate(page, PROJECT_SCHEMA)
    assert page["meta"] == {"api-version": "1.1"} and page["name"] == "demo"
    assert page["versions"] == ["0.5", "1.0", "2.0"]
    unknown, one, two = page["files"]
    html_links = Links.of(get(app, "/simple/demo/").get_data(as_text=True)).links
    assert [f["url"] for f in page["files"]] == [a["href"].split("#")[0] for a in html_links]

    unknown_bytes = demo["unknown"].read_bytes()
    assert unknown == {
        "filename": demo["unknown"].name, "url": unknown["url"],
        "hashes": {"sha256": hashlib.sha256(unknown_bytes).hexdigest()},
        "core-metadata": False, "dist-info-metadata": False, "yanked": False,
        # No record yet: the size the state recorded with the file (no upload-time).
        "size": len(unknown_bytes),
    }
    record = demo["one_record"]
    assert one == {
        "filename": demo["one"].name, "url": one["url"], "hashes": {"sha256": record.sha256},
        "requires-python": ">=3.8",
        "core-metadata": {"sha256": record.metadata_sha256},
        "dist-info-metadata": {"sha256": record.metadata_sha256},
        "yanked": False, "size": demo["one"].stat().st_size, "upload-time": UPLOADED_PEP700,
    }
    assert two["yanked"] == 'broken "<build>" & more'
    for file in page["files"]:
        body = get(app, file["url"]).get_data()
        assert hashlib.sha256(body).hexdigest() == file["hashes"]["sha256"] and len(body) == file["size"]


@pytestmark_local
@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_json_hashes_add_the_configured_algorithm(bucket: BucketProbe, tmp_path: Path, htpasswd: Path,
                                                  algorithm: str) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, HASH_ALGO=algorithm)
    bucket.put("demo-1.0.tar.gz", b"one")
    files = app.checked_get("/simple/demo/", headers={"Accept": JSON_V1}).json["files"]
    assert files[0]["hashes"] == {
        algorithm: hashlib.new(algorithm, b"one").hexdigest(), "sha256": hashlib.sha256(b"one").hexdigest()}


@pytestmark_local
def test_the_format_parameter_overrides_accept(app: App, demo: dict[str, Any]) -> None:
    reply = get(app, "/simple/demo/", "text/html", query_string={"format": JSON_V1})
    assert reply.headers["Content-Type"] == JSON_V1 and reply.json["name"] == "demo"
    reply = get(app, "/simple/", JSON_V1, query_string={"format": "text/html"})
    assert reply.headers["Content-Type"] == HTML_TYPE


# -- what stays pypiserver's, and 406 ----------------------------------------------------------

@pytestmark_local
@pytest.mark.parametrize("path", ["/simple/", "/simple/demo/"])
def test_nothing_acceptable_is_a_406_that_says_what_is_served(app: App, demo: dict[str, Any], path: str) -> None:
    reply = get(app, path, "application/json")
    assert reply.status_code == 406 and reply.headers["Vary"] == "Accept"
    assert reply.headers["Content-Type"].startswith("text/plain")
    body = reply.get_data(as_text=True)
    assert JSON_V1 in body and "text/html" in body
    assert get(app, path, "text/html", query_string={"format": "image/png"}).status_code == 406


@pytestmark_local
def test_redirects_and_404s_stay_pypiservers_and_vary(app: App, demo: dict[str, Any]) -> None:
    moved = get(app, "/simple/Demo/", JSON_V1)
    assert moved.status_code == 301 and moved.headers["Location"].endswith("/simple/demo/")
    assert moved.headers["Vary"] == "Accept"
    missing = get(app, "/simple/nothing-here/", JSON_V1)
    assert missing.status_code == 404 and missing.headers["Vary"] == "Accept"
    # An unacceptable type for a missing project: still pypiserver's 404.
    assert get(app, "/simple/nothing-here/", "application/json").status_code == 404


@pytestmark_local
def test_a_project_that_appears_during_the_request_is_answered_in_the_type_asked(
        app: App, demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI once hit: the checker thread adds a project's first file between the
    plugin's read of the index (nothing: leave it to pypiserver's 404) and pypiserver's own
    read (a page, in HTML). The timing is forced here (a stand-in: no real check can be made
    to land between two reads of one request): the first read finds nothing."""
    backend = app.wsgi._pypiserver_config.backend.backend  # ours, behind pypiserver's BackendProxy
    real = backend.find_project_packages
    reads: list[str] = []

    def first_read_before_the_check(project: str) -> Any:
        reads.append(project)
        return [] if len(reads) == 1 else real(project)

    monkeypatch.setattr(backend, "find_project_packages", first_read_before_the_check)
    reply = get(app, "/simple/demo/", JSON_V1)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == JSON_V1
    assert [f["filename"] for f in reply.json["files"]] == sorted(
        [demo["unknown"].name, demo["one"].name, demo["two"].name], key=lambda name: name.split("-")[1])
    assert len(reads) == 3  # ours (nothing), pypiserver's (its page), ours again


@pytestmark_local
@pytest.mark.parametrize("path", ["/simple/", "/simple/demo/"])
def test_authentication_comes_before_negotiation(bucket: BucketProbe, tmp_path: Path, htpasswd: Path,
                                                 path: str) -> None:
    app = quiet_app(bucket, tmp_path, htpasswd, AUTHENTICATE="update,list,download")
    assert app.upload(make_wheel(tmp_path / "dist", "demo", "1.0")).status_code == 200
    for accept in (JSON_V1, "application/json"):
        refused = get(app, path, accept)
        assert refused.status_code == 401 and refused.headers["Vary"] == "Accept"
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
    wrong = {"Authorization": "Basic " + base64.b64encode(b"someone:wrong").decode(), "Accept": JSON_V1}
    assert app.http.get(path, headers=wrong).status_code == 403
    assert get(app, path, JSON_V1, auth=True).status_code == 200
    assert get(app, path, "application/json", auth=True).status_code == 406


@pytestmark_local
def test_redirects_and_404s_are_behind_the_login_too(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    app = quiet_app(bucket, tmp_path, htpasswd, AUTHENTICATE="update,list")
    assert app.upload(make_wheel(tmp_path / "dist", "demo", "1.0")).status_code == 200
    for path in ("/simple/Demo/", "/simple/nothing-here/"):
        assert get(app, path, JSON_V1).status_code == 401
    assert get(app, "/simple/Demo/", JSON_V1, auth=True).status_code == 301
    assert get(app, "/simple/nothing-here/", JSON_V1, auth=True).status_code == 404


# -- core metadata files (PEP 658/714) ----------------------------------------------------------

@pytestmark_local
def test_the_metadata_file_has_the_digest_of_the_link(app: App, demo: dict[str, Any]) -> None:
    links = Links.of(get(app, "/simple/demo/").get_data(as_text=True)).links
    served = 0
    for link in links:
        if "data-core-metadata" not in link:
            continue
        url = str(link["href"]).split("#")[0] + ".metadata"
        reply = get(app, url)
        assert reply.status_code == 200
        body = reply.get_data()
        assert link["data-core-metadata"] == f"sha256={hashlib.sha256(body).hexdigest()}"
        assert body.startswith(b"Metadata-Version:")
        served += 1
    assert served == 2


@pytestmark_local
def test_a_file_without_metadata_has_no_metadata_file(app: App, demo: dict[str, Any], tmp_path: Path) -> None:
    assert get(app, f"/packages/{demo['unknown'].name}.metadata").status_code == 404  # no record
    # A record without a metadata digest: 404 too, even if a stray file is in place.
    wheel = make_wheel(tmp_path / "dist", "plain", "1.0")
    assert app.upload(wheel).status_code == 200
    seed_record(app, wheel.name)
    app.client.folder.write_metadata(wheel.name, b"Metadata-Version: 2.1\n")
    assert get(app, f"/packages/{wheel.name}.metadata").status_code == 404
    assert get(app, "/packages/nothing-1.0-py3-none-any.whl.metadata").status_code == 404
    # The package files themselves are served as before.
    assert get(app, f"/packages/{wheel.name}").get_data() == wheel.read_bytes()
    # And the metadata files are not listed as packages.
    assert ".metadata" not in get(app, "/packages/").get_data(as_text=True)


@pytestmark_local
def test_the_metadata_file_needs_the_same_login_as_the_file(bucket: BucketProbe, tmp_path: Path,
                                                             htpasswd: Path) -> None:
    app = quiet_app(bucket, tmp_path, htpasswd, AUTHENTICATE="update,download")
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    metadata = wheel_metadata(wheel)
    seed_record(app, wheel.name, metadata=metadata)
    for path in (f"/packages/{wheel.name}", f"/packages/{wheel.name}.metadata"):
        refused = get(app, path)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
    assert get(app, f"/packages/{wheel.name}.metadata", auth=True).get_data() == metadata
    # The page (list is not authenticated here) advertises it.
    assert f"sha256={hashlib.sha256(metadata).hexdigest()}" in get(app, "/simple/demo/").get_data(as_text=True)


def test_negotiation_helpers_do_not_need_a_request() -> None:
    # The renderers are pure: a page from plain values.
    from gcs_sync.web.simple_api import ProjectFile, render_project_html, render_project_json

    file = ProjectFile("a-1.0.tar.gz", "/packages/a-1.0.tar.gz#sha256=ab", {"sha256": "ab"},
                       requires_python="<4,>=3.9", yanked="x'y", size=3)
    page = render_project_html("a", [file])
    assert 'data-requires-python="&lt;4,&gt;=3.9"' in page and 'data-yanked="x&#039;y"' in page
    raw = json.loads(render_project_json("a", ["1.0"], [file]))
    jsonschema.validate(raw, PROJECT_SCHEMA)
    assert raw["files"][0]["url"] == "/packages/a-1.0.tar.gz"
    assert re.search(r"<title>Links for a</title>", page)




# Uploads and syncs make records from branch main's records work on (gcs_sync.records.compute).
RECORDS_MADE = importlib.util.find_spec("gcs_sync.records.compute") is not None


@pytestmark_local
@pytest.mark.skipif(not RECORDS_MADE, reason="uploads do not make records before the merge of main")
def test_an_uploaded_wheel_is_listed_with_its_own_record_here_and_on_another_instance(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    # No seeding: the records the upload and the sync make.
    app = quiet_app(bucket, tmp_path, htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    other = App(bucket, tmp_path / "other", htpasswd)
    metadata = wheel_metadata(wheel)
    for instance in (app, other):
        page = instance.checked_get("/simple/demo/", headers={"Accept": JSON_V1}).json
        jsonschema.validate(page, PROJECT_SCHEMA)
        (file,) = page["files"]
        assert file["core-metadata"] == {"sha256": hashlib.sha256(metadata).hexdigest()}
        assert file["size"] == wheel.stat().st_size and file["yanked"] is False
        assert "upload-time" in file
        served = get(instance, file["url"] + ".metadata")
        assert served.status_code == 200 and served.get_data() == metadata
