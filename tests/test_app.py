"""The wrapped pypiserver app, called in-process through WSGI on every driver: what a
client sees, and what each request costs in bucket calls."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import xmlrpc.client
from pathlib import Path

import pytest
from werkzeug.test import Client

from gcs_sync import build_app
from gcs_sync.drivers import make_driver
from gcs_sync.sync.client import StorageClient
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.packages import make_wheel
from testkit.servers import PASSWORD, USER

from .conftest import settings_for
from .views import age_listing, age_view

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


class App:
    # Every App made by the running test: stopped after it (conftest), so that no checker
    # thread (started by /ready or /_ah/warmup) outlives its test.
    running: list["App"] = []

    def __init__(self, bucket: BucketProbe, folder: Path, htpasswd: Path, **overrides: object) -> None:
        self.settings = settings_for(bucket, folder, PASSWORD_FILE=htpasswd, **overrides)
        self.driver = make_driver(self.settings)
        self.wsgi = build_app(self.settings, self.driver)
        self.http = Client(self.wsgi)
        self.folder = folder
        App.running.append(self)

    def upload(self, wheel: Path, user_agent: str = "gcs-sync-tests", data: bytes | None = None):
        content = io.BytesIO(wheel.read_bytes() if data is None else data)
        return self.http.post("/", data={":action": "file_upload", "content": (content, wheel.name)},
                              headers={**AUTH, "User-Agent": user_agent})

    @property
    def client(self) -> StorageClient:
        return self.wsgi.config["gcs_sync.client"]

    def age_view(self) -> None:
        """Pretend the last check of the bucket was longer ago than SYNC_INTERVAL. A check
        still under way in the background is let finish first: it marks the view checked
        before it counts itself done, so it could undo the aging, or end the wait of the
        next ``checked_get`` in place of the check that one starts (a check of the change
        feed is quick enough to be in that state when ``checked_get`` returns)."""
        under_way = self.client._checker._one_check
        if under_way is not None:
            under_way.join(30)
        age_view(self.client, 2 * max(self.settings.sync_interval, 1))

    def checked_get(self, path: str, **kwargs: object):
        """A read once the check it starts is done: a read that finds the view old starts
        the check in the background and is served the last complete view meanwhile."""
        done = self.client.checks_completed
        self.http.get(path, **kwargs)
        if not self.client.is_fresh():  # (else the view was current: no check was due)
            assert self.client.wait_for_checks(done, 30), "the check did not finish"
        return self.http.get(path, **kwargs)

    def leftovers(self) -> list[str]:
        return [p.name for p in self.folder.iterdir() if p.name.startswith(".") and p.name != ".gcs_sync"]


@pytest.fixture
def app(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> App:
    return App(bucket, tmp_path / "packages", htpasswd)


def test_upload_answers_200_only_with_the_file_in_the_bucket(app: App, bucket: BucketProbe, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    reply = app.upload(wheel)
    assert reply.status_code == 200
    assert bucket.get(wheel.name) == wheel.read_bytes()
    page = app.http.get("/simple/demo/").get_data(as_text=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"{wheel.name}#sha256={digest}" in page


def test_existing_name_in_the_bucket_is_a_conflict_even_if_not_local(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, SYNC_INTERVAL=3600)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    app.http.get("/simple/")  # the view is fresh for an hour from here on...
    bucket.put(wheel.name, b"uploaded elsewhere")  # ...so only the bucket knows of this
    reply = app.upload(wheel)
    assert reply.status_code == 409
    assert "already exists" in reply.get_data(as_text=True)
    assert app.upload(wheel, user_agent="twine/7.0.0").status_code == 400  # as stock pypiserver
    assert bucket.get(wheel.name) == b"uploaded elsewhere"
    assert app.leftovers() == []


def test_failed_bucket_write_is_a_503_naming_the_file_and_nothing_is_kept(
    app: App, bucket: BucketProbe, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    app.http.get("/simple/")
    assert app.client.wait_for_maintenance()  # the catalog snapshot after the cold start's listing
    bucket.remove_bucket()
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):
        reply = app.upload(wheel)
    assert reply.status_code == 503
    assert wheel.name in reply.status and wheel.name in reply.get_data(as_text=True)
    assert wheel.name in caplog.text and "failed" in caplog.text
    assert not (app.folder / wheel.name).exists() and app.leftovers() == []
    assert app.http.get("/simple/demo/").status_code == 404
    assert wheel.name not in app.http.get("/packages/").get_data(as_text=True)


def test_removal_deletes_from_the_bucket_then_locally(app: App, bucket: BucketProbe, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    assert app.upload(wheel).status_code == 200
    reply = app.http.post("/", data={":action": "remove_pkg", "name": "demo", "version": "1.0"}, headers=AUTH)
    assert reply.status_code == 200
    assert bucket.names() == set()
    assert app.http.get("/simple/demo/").status_code == 404


@pytest.mark.parametrize("spelling", ["my-pkg", "My.Pkg", "my_pkg"])
def test_removal_accepts_any_spelling_of_the_project(app: App, bucket: BucketProbe, tmp_path: Path,
                                                     spelling: str) -> None:
    # Modern build tools name files my_pkg-…; users type the project's name, my-pkg (PEP 503).
    wheel = make_wheel(tmp_path / "dist", "my-pkg", "1.0")
    assert wheel.name.startswith("my_pkg-") and app.upload(wheel).status_code == 200
    assert app.http.get(f"/simple/{spelling}/", follow_redirects=True).status_code == 200
    reply = app.http.post("/", data={":action": "remove_pkg", "name": spelling, "version": "1.0"}, headers=AUTH)
    assert reply.status_code == 200
    assert bucket.names() == set()
    assert app.http.get("/simple/my-pkg/").status_code == 404


def test_the_welcome_page_is_pypiservers_or_the_one_welcome_names(bucket: BucketProbe, tmp_path: Path,
                                                                    htpasswd: Path) -> None:
    # pypiserver's own tests of --welcome (test_root_welcome_msg_*), through WELCOME.
    from pypiserver import __version__

    # Straight into the bucket, before the first instance: the others start from the
    # catalog snapshot it writes after listing the bucket (a file put there after that
    # snapshot would come with their first full listing, FULL_SYNC_INTERVAL later).
    bucket.put("demo-1.0.tar.gz", b"demo")
    stock = App(bucket, tmp_path / "stock", htpasswd)
    page = stock.http.get("/").get_data(as_text=True)
    assert "PyPI compatible package index serving 1 packages" in page
    reply = stock.http.get("/?<alert>Red</alert>", headers={"Host": "somehost.org"}).get_data(as_text=True)
    assert "somehost.org" in reply and "alert" in reply and "<alert>" not in reply
    plain, with_variables = tmp_path / "plain.html", tmp_path / "variables.html"
    plain.write_text("Hello pypiserver, no vars.")
    with_variables.write_text("{{URL}}|{{VERSION}}|{{NUMPKGS}}|{{PACKAGES}}|{{SIMPLE}}")
    custom = App(bucket, tmp_path / "plain", htpasswd, WELCOME=plain)
    page = custom.checked_get("/").get_data(as_text=True)
    assert page.strip() == "Hello pypiserver, no vars." and __version__ not in page
    custom = App(bucket, tmp_path / "variables", htpasswd, WELCOME=with_variables)
    page = custom.checked_get("/", headers={"Host": "index.example"}).get_data(as_text=True)
    assert page.strip() == f"http://index.example/|{__version__}|1|/packages/|/simple/"


def test_an_unknown_project_is_a_404_unless_the_fallback_is_turned_on(bucket: BucketProbe, tmp_path: Path,
                                                                     htpasswd: Path) -> None:
    # README, "Answers that differ from stock pypiserver": DISABLE_FALLBACK=true by default.
    default = App(bucket, tmp_path / "default", htpasswd)
    assert default.checked_get("/simple/not-here/").status_code == 404
    fallback = App(bucket, tmp_path / "fallback", htpasswd, DISABLE_FALLBACK="false",
                   FALLBACK_URL="https://mirror.example/simple/")
    reply = fallback.checked_get("/simple/not-here/")
    assert reply.status_code in (302, 303) and reply.headers["Location"] == "https://mirror.example/simple/not-here/"


def test_refused_requests_change_nothing(app: App, bucket: BucketProbe, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    with open(wheel, "rb") as fh:
        reply = app.http.post("/", data={":action": "file_upload", "content": (fh, wheel.name)})
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
    with open(wheel, "rb") as fh:
        reply = app.http.post("/", data={":action": "file_upload", "content": (fh, "not a package.txt")},
                              headers=AUTH)
    assert reply.status_code == 400
    assert bucket.names() == set() and app.leftovers() == []


def test_health_never_touches_the_bucket(app: App) -> None:
    for _ in range(20):
        assert app.http.get("/health").status_code == 200
        app.http.get("/favicon.ico")
    assert dict(app.driver.calls) == {"check": 1}  # the start-up check only


def test_steady_state_costs_one_feed_listing_per_interval_and_no_full_listing(app: App, bucket: BucketProbe) -> None:
    bucket.put("demo-1.0.tar.gz", b"demo")
    assert app.http.get("/simple/demo/").status_code == 200
    assert app.client.wait_for_maintenance()
    # The cold start looks for a catalog snapshot (a mirror starts from one like a cache
    # instance; there is none yet), then lists the whole bucket: the change feed (the position later checks
    # read from), the packages, the intents of unfinished multi-file uploads
    # (PREFIX/.gcs_sync/pending/: a listing that finds a new object lists them), the
    # records folder (PREFIX/.gcs_sync/records/). Then, in a thread of its own, the
    # catalog snapshots (one is written: +1 upload) and the feed once more, to expire
    # entries older than FEED_RETENTION. ("check" is the start-up check that the bucket
    # exists.) The file another tool put there has no record, so the sync computes one
    # and stores it: +1 upload (these bytes are no real sdist, so the record notes the
    # problem and there is no core metadata file to store with it).
    first = dict(app.driver.calls)
    assert first == {"check": 1, "list": 7, "download": 1, "upload": 2}
    for path in ["/simple/", "/simple/demo/", "/packages/", "/packages/demo-1.0.tar.gz", "/"] * 10:
        assert app.http.get(path).status_code == 200
    assert dict(app.driver.calls) == first
    for check in range(1, 4):
        app.age_view()
        app.checked_get("/simple/")
        # One listing of the feed from this instance's position, which has no new entry:
        # nothing else, and never the packages.
        assert dict(app.driver.calls) == {**first, "list": first["list"] + check}


def test_a_change_through_another_instance_arrives_by_the_feed_without_a_full_listing(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    assert app.http.get("/simple/").status_code == 200
    other = App(bucket, tmp_path / "other-instance", htpasswd)
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    feed = bucket.feed_names()
    assert other.upload(wheel).status_code == 200
    assert bucket.feed_since(feed) == [("a", wheel.name)]  # what every instance is told
    assert app.http.get("/simple/demo/").status_code == 404  # within the interval: not checked yet
    calls = dict(app.driver.calls)
    app.age_view()
    page = app.checked_get("/simple/demo/")
    assert page.status_code == 200 and wheel.name in page.get_data(as_text=True)
    # One listing: the feed from this instance's position. Then a stat of the file its
    # entry names (the bucket's truth, not the entry's word).
    assert app.driver.calls["list"] == calls["list"] + 1
    # Three downloads: the wheel, its record and its core metadata file. The wheel came
    # with its record: nothing to compute or store.
    assert app.driver.calls["stat"] == calls.get("stat", 0) + 1
    assert app.driver.calls["download"] == calls.get("download", 0) + 3
    assert app.driver.calls["upload"] == calls.get("upload", 0)


def search(app: App, text: str) -> list[str]:
    """pip search's XML-RPC call, as pip sends it: the names found."""
    call = xmlrpc.client.dumps(({"name": [text], "summary": [text]}, "or"), "search")
    reply = app.http.post("/RPC2", data=call, headers={"Content-Type": "text/xml"})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    (found,), _ = xmlrpc.client.loads(reply.get_data())
    return [hit["name"] for hit in found]


def test_search_sees_an_upload_through_another_instance_after_the_interval(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    # XML-RPC search is a POST that only reads: it gets the freshness check of any read.
    assert search(app, "demo") == []
    other = App(bucket, tmp_path / "other-instance", htpasswd)
    assert other.upload(make_wheel(tmp_path / "dist", "demo", "1.0")).status_code == 200
    app.age_view()
    checks = app.client.checks_completed
    search(app, "demo")  # starts the check (reads never wait for it)...
    assert app.client.wait_for_checks(checks, 30)
    assert search(app, "demo") == ["demo"]  # ...and the next search has its result


def test_a_change_made_straight_in_the_bucket_appears_with_the_full_listing(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, FULL_SYNC_INTERVAL=3)
    assert app.http.get("/simple/").status_code == 200  # the cold start lists the bucket
    assert app.client.wait_for_maintenance()
    cold = app.driver.calls["list"]
    bucket.put("demo-1.0.tar.gz", b"demo")  # another tool: no feed entry tells of it
    app.age_view()
    assert app.checked_get("/simple/demo/").status_code == 404
    # The check since the cold start read the feed only, which said nothing changed.
    assert app.driver.calls["list"] == cold + 1
    uploads = app.driver.calls["upload"]
    age_listing(app.folder, 3)
    app.age_view()
    assert app.checked_get("/simple/demo/").status_code == 200
    assert app.client.wait_for_maintenance()
    # A full listing: the feed from this instance's position, the packages, the intents
    # (a new object), the records folder; then the catalog snapshots (one was written a
    # moment ago: none now; expiry runs at most hourly)...
    assert app.driver.calls["list"] == cold + 1 + 5
    # ...and +1 upload: the record computed for the file another tool put there.
    assert app.driver.calls["upload"] == uploads + 1


def test_without_a_password_file_the_index_is_read_only(bucket: BucketProbe, tmp_path: Path) -> None:
    settings = settings_for(bucket, tmp_path / "packages")
    http = Client(build_app(settings))
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    with open(wheel, "rb") as fh:
        reply = http.post("/", data={":action": "file_upload", "content": (fh, wheel.name)}, headers=AUTH)
    assert reply.status_code == 403
    assert bucket.names() == set()


def test_links_carry_the_digest_of_the_bytes_served(app: App, bucket: BucketProbe) -> None:
    bucket.put("demo-1.0.tar.gz", b"one")
    bucket.put("demo-2.0.tar.gz", b"two")
    page = app.http.get("/simple/demo/").get_data(as_text=True)
    links = re.findall(r'href="[^"#]*/packages/([^"#]+)#sha256=([0-9a-f]+)"', page)
    assert len(links) == 2
    for filename, digest in links:
        body = app.http.get(f"/packages/{filename}").get_data()
        assert hashlib.sha256(body).hexdigest() == digest == hashlib.sha256(bucket.get(filename)).hexdigest()


@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_another_hash_algorithm_gives_its_own_digest(
    algorithm: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, HASH_ALGO=algorithm)
    bucket.put("demo-1.0.tar.gz", b"one")
    page = app.http.get("/simple/demo/").get_data(as_text=True)
    assert f"demo-1.0.tar.gz#{algorithm}={hashlib.new(algorithm, b'one').hexdigest()}" in page


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
@pytest.mark.parametrize("algorithm", ["md5", "sha512"])
def test_a_file_not_held_here_is_linked_with_its_sha256_not_a_500(
    algorithm: str, bucket: BucketProbe, tmp_path: Path, htpasswd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Cache mode: the bytes are in the bucket only, and hashing them with HASH_ALGO would
    # read every file of a page (a mirror's file removed as its page is made: test_local_file).
    app = App(bucket, tmp_path / "packages", htpasswd, HASH_ALGO=algorithm, PACKAGE_FILES="cache")
    bucket.put("demo-1.0.tar.gz", b"one")
    bucket.put("demo-2.0.tar.gz", b"two")
    with caplog.at_level(logging.WARNING, logger="gcs_sync.backend"):
        for path in ("/simple/demo/", "/packages/"):
            answer = app.http.get(path)
            assert answer.status_code == 200, path
            page = answer.get_data(as_text=True)
            for name, data in (("demo-1.0.tar.gz", b"one"), ("demo-2.0.tar.gz", b"two")):
                assert f"{name}#sha256={hashlib.sha256(data).hexdigest()}" in page, path
    said = [r.getMessage() for r in caplog.records if f"HASH_ALGO={algorithm}" in r.getMessage()]
    assert len(said) == 1 and "linked with their sha256" in said[0]  # once per process, not per file


def test_without_hashing_links_carry_no_digest(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, HASH_ALGO="off")
    bucket.put("demo-1.0.tar.gz", b"one")
    page = app.http.get("/simple/demo/").get_data(as_text=True)
    assert 'packages/demo-1.0.tar.gz"' in page


def test_with_overwrite_a_same_name_upload_replaces_the_bucket_copy(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, OVERWRITE="true")
    wheel = make_wheel(tmp_path / "dist", "demo", "1.0")
    rebuilt = make_wheel(tmp_path / "rebuilt", "demo", "1.0", value="rebuilt").read_bytes()
    assert rebuilt != wheel.read_bytes()
    assert app.upload(wheel).status_code == 200
    assert app.upload(wheel, data=rebuilt).status_code == 200
    assert bucket.get(wheel.name) == rebuilt
    assert app.http.get(f"/packages/{wheel.name}").get_data() == rebuilt
    digest = hashlib.sha256(rebuilt).hexdigest()
    assert f"{wheel.name}#sha256={digest}" in app.http.get("/simple/demo/").get_data(as_text=True)


def test_a_request_of_several_files_stores_all_or_none(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, SYNC_INTERVAL=3600)
    wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
    app.http.get("/simple/")  # fresh for an hour: the signature below is only in the bucket
    bucket.put(wheel.name + ".asc", b"a signature uploaded elsewhere")
    reply = app.http.post("/", headers=AUTH, data={
        ":action": "file_upload",
        "content": (io.BytesIO(wheel.read_bytes()), wheel.name),
        "gpg_signature": (io.BytesIO(b"new signature"), wheel.name + ".asc"),
    })
    assert reply.status_code == 409
    assert bucket.names() == {wheel.name + ".asc"}  # the wheel stored first was deleted again
    assert bucket.get(wheel.name + ".asc") == b"a signature uploaded elsewhere"
    assert not (app.folder / wheel.name).exists() and app.leftovers() == []


@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_an_upload_undone_after_a_failure_still_tells_the_feed_it_is_gone(
    bucket: BucketProbe, s3_server: str, tmp_path: Path, htpasswd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel was in the bucket for a moment before its signature failed and it was
    deleted again: another instance may have listed it then, so it must look again. A
    proxy in front of moto fails the signature's PUT."""
    host, port = s3_server.removeprefix("http://").split(":")
    with FaultProxy(host, int(port)) as proxy:
        proxy.add_rule("PUT", r"\.asc$", Respond(503))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        app = App(bucket, tmp_path / "packages", htpasswd)
        app.http.get("/simple/")
        before = bucket.feed_names()
        wheel = make_wheel(tmp_path / "dist", "signed", "1.0")
        reply = app.http.post("/", headers=AUTH, data={
            ":action": "file_upload",
            "content": (io.BytesIO(wheel.read_bytes()), wheel.name),
            "gpg_signature": (io.BytesIO(b"signature"), wheel.name + ".asc"),
        })
    assert reply.status_code == 503
    # No package stays; the signature's write got no answer, so its claimed intent stays
    # (pending.py), for the clean-up to remove that file should the write land late.
    assert {name for name in bucket.names() if not name.startswith(".gcs_sync/")} == set()
    # The wheel was created, then deleted again: instances that listed it meanwhile
    # learn from the feed that it is gone.
    assert bucket.feed_since(before) == [("d", wheel.name)]


def test_a_file_deleted_by_hand_is_not_listed_after_the_next_check(
    bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, TIER="prod", FULL_SYNC_INTERVAL=3600, PACKAGE_FILES="mirror")
    bucket.put("demo-1.0.tar.gz", b"demo")
    for _ in range(2):  # the second check reads the feed only: steady state
        app.checked_get("/simple/")
        app.age_view()
    (app.folder / "demo-1.0.tar.gz").unlink()  # a /tmp cleaner
    assert app.checked_get("/packages/demo-1.0.tar.gz").status_code == 200  # downloaded again
    assert app.http.get("/packages/demo-1.0.tar.gz").get_data() == b"demo"


def test_a_damaged_state_is_rebuilt_at_the_next_check(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> None:
    app = App(bucket, tmp_path / "packages", htpasswd, FULL_SYNC_INTERVAL=3600)
    bucket.put("demo-1.0.tar.gz", b"demo")
    for _ in range(2):
        app.checked_get("/simple/")
        app.age_view()
    (app.folder / ".gcs_sync" / "state.json").write_text('{"format": 1}')  # damaged, or from an old release
    assert app.checked_get("/simple/demo/").status_code == 200
    assert app.http.get("/packages/demo-1.0.tar.gz").get_data() == b"demo"


def test_the_same_bytes_uploaded_again_are_accepted_and_other_bytes_are_a_conflict(
    app: App, bucket: BucketProbe, tmp_path: Path, htpasswd: Path
) -> None:
    """A retry of an upload whose first write landed (its reply lost, or late) must not
    fail: like PyPI, an identical re-upload is a success; different bytes stay a 409."""
    wheel = make_wheel(tmp_path / "dist", "again", "1.0")
    other_bytes = make_wheel(tmp_path / "rebuilt", "again", "1.0", value="other bytes").read_bytes()
    assert other_bytes != wheel.read_bytes()
    assert app.upload(wheel).status_code == 200
    assert app.upload(wheel).status_code == 200
    assert app.upload(wheel, data=other_bytes).status_code == 409
    assert app.upload(wheel, user_agent="twine/6.1.0", data=other_bytes).status_code == 400
    assert bucket.get(wheel.name) == wheel.read_bytes()
    other = App(bucket, tmp_path / "other-instance", htpasswd)
    assert other.upload(wheel).status_code == 200  # not local there: the bucket compares
    assert other.upload(wheel, data=other_bytes).status_code == 409
