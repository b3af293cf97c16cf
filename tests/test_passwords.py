"""PASSWORD_FILE as an object in the bucket (gs://, s3://): the server reads its users from
the object at start-up, follows its changes at the pace of the package sync (bucket calls
per change, not per request), and never locks its users out over a bad version. First
in-process through WSGI, then under real gunicorn with the CLI, on the GCS emulator and
moto's S3 server."""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
from passlib.apache import HtpasswdFile
from werkzeug.test import Client

from gcs_sync import ConfigError, build_app
from gcs_sync.auth import password_file
from gcs_sync.cli import main
from gcs_sync.sync.feed import ChangeKind
from testkit.buckets import BucketProbe
from testkit.fault_proxy import FaultProxy, Respond
from testkit.packages import sdist_bytes
from testkit.servers import Instance, start_instance, upload_form
from testkit.wait import eventually

from .conftest import announce, settings_for
from .test_app import App

pytestmark = pytest.mark.parametrize("bucket", ["gcs", "s3"], indirect=True)

KEY = "config/htpasswd"  # outside the package folder, as the README recommends
DAMAGED = b"alice:$apr1$garbage\n"  # a hash cut short: every login of alice would be a 500
_names = itertools.count()


POLL_SECONDS, PAUSE = 20, 0.25  # polled for at most 20 s (several SYNC_INTERVALs), every 0.25 s


def htpasswd(**passwords: str) -> bytes:
    # apr1 is quick to verify, which polling loops want; every scheme is tested in test_auth.
    users = HtpasswdFile(default_scheme="apr_md5_crypt")
    for user, password in passwords.items():
        users.set_password(user, password)
    return users.to_string()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def announce_users(bucket: BucketProbe) -> None:
    """What ``users add|remove`` does after writing the object: a change-feed entry of kind
    "users", which tells every instance to look at the object at its next check."""
    announce(bucket, ChangeKind.USERS)


def cli(bucket: BucketProbe, folder: Path, monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    """``python -m gcs_sync users ...`` in this process, as the operator runs it."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    env = {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(folder), "PASSWORD_FILE": bucket.url(KEY)}
    return main(["users", *argv], env)


class Server:
    """The app in-process, with PASSWORD_FILE naming the object."""

    def __init__(self, bucket: BucketProbe, folder: Path, **overrides: object) -> None:
        self.settings = settings_for(bucket, folder, PASSWORD_FILE=bucket.url(KEY), **overrides)
        self.wsgi = build_app(self.settings)
        self.http = Client(self.wsgi)
        self.folder = folder
        self.passwords = self.wsgi.config["gcs_sync.passwords"]
        self.client = self.wsgi.config["gcs_sync.client"]
        App.running.append(self)  # its checker thread is stopped after the test (conftest)

    def upload(self, user: str, password: str) -> int:
        version = f"1.{next(_names)}"
        data = {":action": "file_upload", "content": (io.BytesIO(sdist_bytes("pkg", version)), f"pkg-{version}.tar.gz")}
        return self.http.post("/", data=data, headers=basic(user, password)).status_code

    def check(self) -> None:
        """A read, once the freshness check it starts (as every read may) is done."""
        done = self.client.checks_completed
        assert self.http.get("/simple/").status_code == 200
        self.client.wait_for_checks(done, 30)

    def ready(self) -> dict:
        # With the details (the last error's message): the operator's view.
        return json.loads(self.http.get("/ready", headers=basic("alice", "s3cret")).get_data())


def test_the_users_come_from_the_object_through_a_private_local_copy(bucket: BucketProbe, tmp_path: Path) -> None:
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    server = Server(bucket, tmp_path / "packages")
    assert server.upload("alice", "s3cret") == 200
    assert server.upload("alice", "wrong") == 403 and server.upload("mallory", "s3cret") == 403
    copy = tmp_path / "packages" / ".gcs_sync" / "htpasswd"
    assert copy.read_bytes() == bucket.get_key(KEY) and copy.stat().st_mode & 0o777 == 0o600
    assert server.ready()["last_error"] is None


def test_a_user_change_costs_bucket_calls_per_change_not_per_request(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli(bucket, tmp_path / "cli", monkeypatch, "add", "alice", "--password-stdin", stdin="s3cret\n") == 0
    server = Server(bucket, tmp_path / "packages", SYNC_INTERVAL=0)  # every request reads the feed
    calls = server.passwords.driver.calls
    # At start: the version read, then looked at once more (a sibling may have put a newer
    # one in place before this worker's copy landed: its start takes no lock).
    assert dict(calls) == {"stat": 2, "download": 1}
    server.check()  # the first sync lists the bucket: one more stat, same version
    assert dict(calls) == {"stat": 3, "download": 1}
    calls.clear()
    for _ in range(20):
        server.check()
    assert dict(calls) == {}  # no new feed entry: nothing read for the users

    feed = bucket.feed_names()
    assert cli(bucket, tmp_path / "cli", monkeypatch, "add", "bob", "--password-stdin", stdin="bob's\n") == 0
    assert bucket.feed_since(feed) == [("u", "-")]
    server.check()  # the feed says the users changed: one stat, and the new version read
    assert dict(calls) == {"stat": 1, "download": 1}
    assert server.upload("bob", "bob's") == 200
    for _ in range(20):
        server.check()
    # The upload's feed entry names a package file, not the users: nothing read for them.
    assert dict(calls) == {"stat": 1, "download": 1}


def test_a_missing_or_unusable_object_stops_the_start_naming_it(bucket: BucketProbe, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"PASSWORD_FILE: no such object: {bucket.url(KEY)}"):
        Server(bucket, tmp_path / "packages")
    bucket.put_key(KEY, DAMAGED)
    with pytest.raises(ConfigError) as caught:
        Server(bucket, tmp_path / "packages")
    message = str(caught.value)
    assert f"htpasswd file {bucket.url(KEY)}, line 1: the entry of user 'alice' is not a usable hash" in message
    assert "garbage" not in message  # a hash is a secret, even a damaged one
    bucket.put_key(KEY, b"")
    with pytest.raises(ConfigError, match="has no users"):
        Server(bucket, tmp_path / "packages")


def test_a_bad_new_version_keeps_the_users_and_is_reported_until_fixed(
    bucket: BucketProbe, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    server = Server(bucket, tmp_path / "packages", SYNC_INTERVAL=0)
    good_copy = (tmp_path / "packages" / ".gcs_sync" / "htpasswd").read_bytes()
    server.check()
    bucket.put_key(KEY, DAMAGED)
    announce_users(bucket)
    with caplog.at_level(logging.INFO, logger="gcs_sync"):
        server.check()
        report = server.ready()
        assert report["status"] == "degraded" and bucket.url(KEY) in report["last_error"]["error"]
        assert "not a usable hash" in report["last_error"]["error"]
        assert server.upload("alice", "s3cret") == 200  # the last good users stay
        downloads = server.passwords.driver.calls["download"]
        for _ in range(3):
            server.check()
        assert server.passwords.driver.calls["download"] == downloads  # a refused version is read once
    assert (tmp_path / "packages" / ".gcs_sync" / "htpasswd").read_bytes() == good_copy
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("gcs_sync")]
    assert len(errors) == 1 and bucket.url(KEY) in errors[0]  # once per problem, not per check
    assert "garbage" not in caplog.text

    bucket.put_key(KEY, htpasswd(alice="s3cret", bob="bob's"))  # fixed, by another tool: no feed entry
    server.check()  # while a version is refused, every check looks for the next one
    report = server.ready()
    assert report["status"] == "ok" and report["last_error"] is None
    assert server.upload("bob", "bob's") == 200


def test_an_older_copy_put_in_place_after_a_siblings_newer_one_is_replaced_at_the_next_check(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    """A worker starting as ``users remove`` lands (its start-up load takes no lock): a
    sibling installs and records the new version, then the starting worker's rename of the
    version it read before lands last. The record no longer describes the copy in place,
    so the next check, listing or not, reads the object again: the removed user is out."""
    bucket.put_key(KEY, htpasswd(alice="s3cret", bob="bob's"))
    folder = tmp_path / "packages"
    server = Server(bucket, folder, SYNC_INTERVAL=0)  # every request checks the feed
    copy = folder / ".gcs_sync" / "htpasswd"
    before_removal = copy.read_bytes()
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    announce_users(bucket)
    server.check()
    assert copy.read_bytes() == bucket.get_key(KEY) and server.upload("bob", "bob's") == 403
    late = copy.with_name(".late-rename")  # the starting worker's temp, renamed in last
    late.write_bytes(before_removal)
    late.chmod(0o600)
    late.replace(copy)
    server.check()  # no feed entry, no listing
    assert copy.read_bytes() == bucket.get_key(KEY)
    assert server.upload("bob", "bob's") == 403 and server.upload("alice", "s3cret") == 200


def test_a_worker_starting_as_the_users_change_ends_with_the_new_version_even_if_its_copy_lands_last(
    bucket: BucketProbe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: a sibling installs and records the new version between the
    starting worker's download of the old one and its rename; the starting worker's record
    then describes its own (old) copy. Its start looks at the object once more."""
    bucket.put_key(KEY, htpasswd(alice="s3cret", bob="bob's"))
    folder = tmp_path / "packages"
    sibling = Server(bucket, folder, SYNC_INTERVAL=0)
    real_step_mtime = password_file.step_mtime
    stepped: list[int] = []

    def sibling_first(temp: Path, target: Path) -> None:
        # Just before the starting worker's rename (its temp holds the old version).
        if not stepped:
            stepped.append(1)
            bucket.put_key(KEY, htpasswd(alice="s3cret"))  # users remove bob
            announce_users(bucket)
            sibling.check()
            assert target.read_bytes() == bucket.get_key(KEY)  # the sibling's new copy
        real_step_mtime(temp, target)

    monkeypatch.setattr(password_file, "step_mtime", sibling_first)
    (folder / ".gcs_sync" / "htpasswd.json").unlink()  # so the starting worker downloads
    starting = Server(bucket, folder, SYNC_INTERVAL=0)
    assert stepped
    assert (folder / ".gcs_sync" / "htpasswd").read_bytes() == bucket.get_key(KEY)
    assert starting.upload("bob", "bob's") == 403 and starting.upload("alice", "s3cret") == 200


def test_a_restarted_worker_keeps_the_last_good_users_while_the_object_is_bad(
    bucket: BucketProbe, tmp_path: Path
) -> None:
    """gunicorn halts the whole server when a worker fails to boot: a worker restarted
    while the object is bad must start on the copy its siblings serve."""
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    Server(bucket, tmp_path / "packages")
    bucket.put_key(KEY, DAMAGED)
    restarted = Server(bucket, tmp_path / "packages")
    assert restarted.upload("alice", "s3cret") == 200
    restarted.check()
    assert bucket.url(KEY) in restarted.ready()["last_error"]["error"]
    with pytest.raises(ConfigError, match="not a usable hash"):  # a new instance has no good copy
        Server(bucket, tmp_path / "elsewhere")


@pytest.mark.slow
def test_a_bucket_down_at_start_lets_it_start_and_the_users_arrive_when_it_answers(
    bucket: BucketProbe, proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    proxy.add_rule(None, ".*", Respond(503, b"unavailable"))
    with caplog.at_level(logging.ERROR, logger="gcs_sync"):  # an outage is no configuration error
        server = Server(bucket, tmp_path / "packages", STORAGE_TIMEOUT=1, SYNC_INTERVAL=0.5)
    assert f"cannot read {bucket.url(KEY)}" in caplog.text and "nobody can log in until" in caplog.text
    assert server.upload("alice", "s3cret") == 403  # nobody can log in yet; no 500
    assert server.ready()["status"] == "starting"
    proxy.clear_rules()

    def recovered() -> bool:
        server.check()  # a check retries the object while its copy is not current
        return server.ready()["status"] == "ok"

    assert eventually(recovered, POLL_SECONDS, PAUSE)
    assert server.upload("alice", "s3cret") == 200


# -- under gunicorn ------------------------------------------------------------------

def upload_status(instance: Instance, user: str, password: str) -> int:
    # Uploads skip the freshness check (see web/plugin.py): a read makes the instance look.
    instance.get("/ready")
    version = f"1.{next(_names)}"
    return upload_form(instance.url, f"pkg-{version}.tar.gz", sdist_bytes("pkg", version), user=user, password=password)[0]


@pytest.fixture
def started(bucket: BucketProbe, tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    instances: list[Instance] = []

    def start(**overrides: str) -> Instance:
        env = {**bucket.env(), "PASSWORD_FILE": bucket.url(KEY), "SYNC_INTERVAL": "1", **overrides}
        instances.append(start_instance(env, tmp_path / f"served-{len(instances)}", tmp_path))
        return instances[-1]

    yield start
    for instance in instances:
        instance.stop()


@pytest.mark.slow
def test_users_added_and_removed_with_the_cli_reach_running_workers(
    bucket: BucketProbe, started: Callable[..., Instance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli(bucket, tmp_path / "cli", monkeypatch, "add", "alice", "--password-stdin", stdin="s3cret\n") == 0
    instance = started()
    assert upload_status(instance, "bob", "bob's secret") == 403
    assert cli(bucket, tmp_path / "cli", monkeypatch, "add", "bob", "--password-stdin", stdin="bob's secret\n") == 0
    assert eventually(lambda: upload_status(instance, "bob", "bob's secret") == 200, POLL_SECONDS, PAUSE), instance.log()
    assert cli(bucket, tmp_path / "cli", monkeypatch, "remove", "bob") == 0
    assert eventually(lambda: upload_status(instance, "bob", "bob's secret") == 403, POLL_SECONDS, PAUSE), instance.log()
    assert upload_status(instance, "alice", "s3cret") == 200
    assert instance.process.poll() is None  # no restart
    log = instance.log()
    assert "s3cret" not in log and "bob's secret" not in log
    assert not any(line.split(b":", 1)[1].strip() in log.encode() for line in bucket.get_key(KEY).splitlines())


@pytest.mark.slow
def test_a_bad_object_stops_the_start_naming_it(bucket: BucketProbe, started: Callable[..., Instance]) -> None:
    bucket.put_key(KEY, DAMAGED)
    with pytest.raises(RuntimeError) as caught:
        started()
    assert f"gcs_sync configuration error: PASSWORD_FILE: htpasswd file {bucket.url(KEY)}" in str(caught.value)
    assert "garbage" not in str(caught.value)


@pytest.mark.slow
def test_a_bad_new_version_keeps_the_users_and_shows_in_ready(
    bucket: BucketProbe, started: Callable[..., Instance]
) -> None:
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    instance = started()
    assert upload_status(instance, "alice", "s3cret") == 200
    bucket.put_key(KEY, DAMAGED)
    announce_users(bucket)

    def reported() -> bool:
        status, body = instance.get("/ready", auth=True)  # the details need credentials
        error = json.loads(body)["last_error"]
        return status == 200 and error is not None and bucket.url(KEY) in error["error"]

    assert eventually(reported, POLL_SECONDS, PAUSE), instance.log()
    assert upload_status(instance, "alice", "s3cret") == 200
    assert f"PASSWORD_FILE: htpasswd file {bucket.url(KEY)}" in instance.log()
    assert "garbage" not in instance.log()


@pytest.mark.slow
def test_a_user_written_by_another_tool_works_after_the_full_listing(
    bucket: BucketProbe, started: Callable[..., Instance]
) -> None:
    bucket.put_key(KEY, htpasswd(alice="s3cret"))
    instance = started(FULL_SYNC_INTERVAL="2")
    assert upload_status(instance, "carol", "carol's") == 403
    bucket.put_key(KEY, htpasswd(alice="s3cret", carol="carol's"))  # gsutil cp: no feed entry
    assert eventually(lambda: upload_status(instance, "carol", "carol's") == 200, POLL_SECONDS, PAUSE), instance.log()
