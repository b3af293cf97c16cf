"""``python -m gcs_sync users add|remove|list`` on a local htpasswd file (the local
backend) and on an object in the bucket (GCS emulator, moto): what the operator sees,
and what the file then holds, read straight from the store."""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest
from passlib.apache import HtpasswdFile

from gcs_sync.auth.password_file import step_mtime
from gcs_sync.cli import main
from gcs_sync.cli.users import SCHEMES
from testkit.packages import sdist_bytes
from testkit.buckets import BucketProbe
from testkit.servers import REPO, clean_env, start_instance, upload_form

KEY = "config/htpasswd"  # outside the package folder, as the README recommends


@pytest.fixture
def env(bucket: BucketProbe, tmp_path: Path) -> dict[str, str]:
    """The server's environment: PASSWORD_FILE is a local file with the local backend, an
    object in the bucket with GCS and S3."""
    password_file = bucket.url(KEY)
    if bucket.backend == "local":
        Path(password_file).parent.mkdir(parents=True, exist_ok=True)
    return {**bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(tmp_path / "packages"), "PASSWORD_FILE": password_file}


def users(env: dict[str, str], *argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["users", *argv], env)


def stored(bucket: BucketProbe) -> Optional[HtpasswdFile]:
    data = bucket.get_key(KEY)
    return None if data is None else HtpasswdFile.from_string(data)


def test_add_update_list_and_remove(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    told: list[list[tuple[str, str]]] = []  # the feed entries each change added
    feed = bucket.feed_names()

    def tell() -> None:
        nonlocal feed
        told.append(bucket.feed_since(feed))
        feed = bucket.feed_names()

    assert users(env, "add", "alice", "--password-stdin", stdin="first secret\n", monkeypatch=monkeypatch) == 0
    assert "added user 'alice'" in capsys.readouterr().out
    tell()
    assert users(env, "add", "bob", "--password-stdin", stdin="bob's secret\n", monkeypatch=monkeypatch) == 0
    tell()
    held = stored(bucket)
    assert held is not None and sorted(held.users()) == ["alice", "bob"]
    assert held.check_password("alice", "first secret") and held.get_hash("alice").startswith(b"$2")  # bcrypt

    assert users(env, "add", "alice", "--password-stdin", stdin="second secret\n", monkeypatch=monkeypatch) == 0
    assert "updated the password of user 'alice'" in capsys.readouterr().out
    tell()
    held = stored(bucket)
    assert held.check_password("alice", "second secret") and not held.check_password("alice", "first secret")

    assert users(env, "list", monkeypatch=monkeypatch) == 0
    listed = capsys.readouterr().out
    assert listed == "alice\nbob\n"  # names only: no hash, no password

    assert users(env, "remove", "bob", monkeypatch=monkeypatch) == 0
    assert "removed user 'bob'" in capsys.readouterr().out
    tell()
    assert stored(bucket).users() == ["alice"]
    assert users(env, "remove", "bob", monkeypatch=monkeypatch) == 1
    assert "no user 'bob'" in capsys.readouterr().err
    tell()  # (the list and the failed removal change nothing)

    if bucket.backend == "local":  # pypiserver re-reads a local file by itself: no feed entry
        assert told == [[]] * 5
    else:  # each change adds a "users" entry, so every instance looks at its next check
        assert told == [[("u", "-")]] * 4 + [[]]


def test_remove_and_list_need_the_file_and_add_creates_it(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["list"], ["remove", "alice"]):
        assert users(env, *argv, monkeypatch=monkeypatch) == 3
        assert f"PASSWORD_FILE: no such file: {env['PASSWORD_FILE']}" in capsys.readouterr().err
    assert stored(bucket) is None
    assert users(env, "add", "alice", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 0
    assert stored(bucket).users() == ["alice"]


def test_the_last_user_is_not_removed(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server refuses an htpasswd file without users, so it would go on with the old one."""
    assert users(env, "add", "alice", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 0
    assert users(env, "remove", "alice", monkeypatch=monkeypatch) == 1
    assert "'alice' is the last user" in capsys.readouterr().err
    assert stored(bucket).users() == ["alice"]


@pytest.mark.parametrize("bucket", ["local"], indirect=True)  # hashing does not depend on the store
@pytest.mark.parametrize("scheme, prefix", list(zip(SCHEMES, [b"$2", b"$6$", b"$apr1$"])))
def test_each_scheme_hashes_a_password_pypiserver_verifies(
    scheme: str, prefix: bytes, bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert users(env, "add", "carol", "--scheme", scheme, "--password-stdin", stdin="carol's secret\n",
                 monkeypatch=monkeypatch) == 0
    held = HtpasswdFile(env["PASSWORD_FILE"])  # as pypiserver reads it
    assert held.get_hash("carol").startswith(prefix)
    assert held.check_password("carol", "carol's secret") and not held.check_password("carol", "wrong")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What the operator types at getpass's prompts. It stands in for a terminal, which a
    test process does not have; getpass itself is the standard library's."""
    typed: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="Password: ": typed.pop(0))
    yield typed
    assert not typed, "every answer was asked for"


@pytest.mark.parametrize("bucket", ["local", "gcs"], indirect=True)
def test_a_prompted_password_must_be_typed_twice_alike(
    bucket: BucketProbe, env: dict[str, str], terminal: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminal.extend(["one secret", "another secret"])
    assert users(env, "add", "alice", monkeypatch=monkeypatch) == 2
    assert "do not match" in capsys.readouterr().err
    assert stored(bucket) is None  # nothing written
    terminal.extend(["", ""])
    assert users(env, "add", "alice", monkeypatch=monkeypatch) == 2
    assert "empty" in capsys.readouterr().err
    terminal.extend(["the secret", "the secret"])
    assert users(env, "add", "alice", monkeypatch=monkeypatch) == 0
    assert stored(bucket).check_password("alice", "the secret")


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
@pytest.mark.parametrize("name", ["", "a:b", "bad\nname", "#commented", " padded", "tab\tname", "x" * 256])
def test_a_bad_user_name_is_refused_before_anything_is_written(
    name: str, bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert users(env, "add", name, "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 2
    assert "is not a user name" in capsys.readouterr().err
    assert stored(bucket) is None


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_password_is_never_taken_from_the_command_line(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as caught:  # argparse: an unexpected argument
        users(env, "add", "alice", "s3cret", monkeypatch=monkeypatch)
    assert caught.value.code == 2 and stored(bucket) is None


@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_the_flag_overrides_the_environment(
    bucket: BucketProbe, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-htpasswd"
    assert users(env, "add", "alice", "--password-file", str(other), "--password-stdin", stdin="s3cret\n",
                 monkeypatch=monkeypatch) == 0
    assert HtpasswdFile(str(other)).users() == ["alice"] and stored(bucket) is None


@pytest.mark.parametrize("bucket", ["local", "s3"], indirect=True)
def test_a_malformed_file_is_reported_not_rewritten(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket.put_key(KEY, b"alice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\njust a line\n")
    assert users(env, "list", monkeypatch=monkeypatch) == 3
    assert users(env, "add", "bob", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 3
    err = capsys.readouterr().err
    assert f"cannot read htpasswd file {env['PASSWORD_FILE']}" in err and "$apr1$" not in err
    assert bucket.get_key(KEY).endswith(b"just a line\n")


@pytest.mark.parametrize("bucket", ["local", "s3"], indirect=True)
def test_a_file_the_server_would_refuse_is_not_written_unless_the_change_mends_it(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry of a scheme the server does not accept (here yescrypt, from mkpasswd) stops
    its start; the command names its line and writes nothing, except when the change
    replaces that very entry."""
    yescrypt = "$y$j9T$F5Jx5fExrKuJdvbQpK0Zo1$7iDHlOrYh0jqN8ylDPyq0Mhd/xZq5ePzXz5WCy.vyr5"
    before = f"alice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\nbob:{yescrypt}\n".encode()
    bucket.put_key(KEY, before)
    assert users(env, "add", "carol", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 3
    err = capsys.readouterr().err
    assert f"htpasswd file {env['PASSWORD_FILE']}, line 2: the entry of user 'bob' is not a usable hash" in err
    assert "nothing was written" in err and yescrypt not in err
    assert bucket.get_key(KEY) == before
    assert users(env, "add", "bob", "--password-stdin", stdin="bob's\n", monkeypatch=monkeypatch) == 0
    assert stored(bucket).check_password("bob", "bob's") and stored(bucket).get_hash("bob").startswith(b"$2")


def test_a_change_made_while_the_password_is_typed_is_not_lost(
    bucket: BucketProbe, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another operator adds a user while this one types a password (getpass stands in for
    the terminal): the write is refused (a generation or ETag precondition in the bucket),
    and nothing of the other's is lost."""
    assert users(env, "add", "alice", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 0

    def meanwhile() -> str:
        assert main(["users", "add", "bob", "--password-stdin", "--scheme", "apr_md5_crypt"], env) == 0
        return "carol's secret"

    monkeypatch.setattr(sys, "stdin", io.StringIO("bob's secret\n"))  # read by the other command
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": meanwhile() if "carol" in prompt else "carol's secret")
    assert main(["users", "add", "carol"], env) == 1
    assert "changed while this command ran" in capsys.readouterr().err
    assert sorted(stored(bucket).users()) == ["alice", "bob"]


def run(env: dict[str, str], *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gcs_sync", "users", *argv], input=stdin, env=clean_env(env),
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_commands_as_a_real_process(bucket: BucketProbe, env: dict[str, str]) -> None:
    added = run(env, "add", "dave", "--password-stdin", "--scheme", "apr_md5_crypt", stdin="dave's secret\n")
    assert added.returncode == 0, added.stderr
    assert "added user 'dave'" in added.stdout and "dave's secret" not in added.stdout + added.stderr
    listed = run(env, "list")
    assert (listed.returncode, listed.stdout) == (0, "dave\n")
    missing = run(env, "remove", "erin")
    assert missing.returncode == 1 and "no user 'erin'" in missing.stderr
    assert stored(bucket).check_password("dave", "dave's secret")


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["local"], indirect=True)
def test_a_user_added_to_a_local_file_logs_in_at_once_on_a_running_server(
    bucket: BucketProbe, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pypiserver re-reads a local htpasswd file when it changes: no feed entry, no wait."""
    assert users(env, "add", "alice", "--password-stdin", stdin="s3cret\n", monkeypatch=monkeypatch) == 0
    instance = start_instance({**bucket.env(), "PASSWORD_FILE": env["PASSWORD_FILE"]}, tmp_path / "served", tmp_path)
    try:
        assert upload_form(instance.url, "pkg-1.0.tar.gz", sdist_bytes("pkg", "1.0"), user="bob", password="bob's")[0] == 403
        assert users(env, "add", "bob", "--password-stdin", "--scheme", "apr_md5_crypt", stdin="bob's\n",
                     monkeypatch=monkeypatch) == 0
        assert upload_form(instance.url, "pkg-1.0.tar.gz", sdist_bytes("pkg", "1.0"), user="bob", password="bob's")[0] == 200
        assert users(env, "remove", "bob", monkeypatch=monkeypatch) == 0
        assert upload_form(instance.url, "pkg-1.1.tar.gz", b"x", user="bob", password="bob's")[0] == 403
    finally:
        instance.stop()


def test_a_file_replaced_within_the_same_instant_is_still_read_again(tmp_path: Path) -> None:
    """passlib (pypiserver's reader) reloads an htpasswd file only if its mtime changed."""
    path = tmp_path / "htpasswd"
    path.write_bytes(b"")
    reader = HtpasswdFile(str(path))
    assert reader.users() == []
    new = tmp_path / ".htpasswd.new"
    new.write_bytes(b"alice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\n")
    same = path.stat().st_mtime_ns
    os.utime(new, ns=(same, same))  # written within the same instant (or a coarse file system)
    step_mtime(new, path)
    os.replace(new, path)
    assert reader.load_if_changed() and reader.users() == ["alice"]
