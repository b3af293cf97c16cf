"""``users add|remove|list``: the htpasswd file, local or in the bucket, through passlib.

PASSWORD_FILE (or ``--password-file``) names it as the server reads it: a local path, or
``gs://BUCKET/KEY`` / ``s3://BUCKET/KEY`` with the matching STORAGE_BACKEND. A change is
written whole, and only over the version that was read (a generation or ETag
precondition in the bucket), so two edits at once never lose one silently. After a change
to a bucket object the change marker is rewritten, so every instance reads the new users
at its next check (within SYNC_INTERVAL plus one sync). Passwords are read from the
terminal or stdin, never from the command line; neither they nor hashes are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol

from passlib.apache import HtpasswdFile

from gcs_sync.cli.common import EXIT_DIFFERENT, EXIT_OK, EXIT_USAGE, overridden_environ, store_settings
from gcs_sync.config import is_object_url, parse_password_object, password_file_setting
from gcs_sync.drivers import FileStoreDriver, make_driver
from gcs_sync.drivers.base import SHA256_KEY, Version
from gcs_sync.errors import ConfigError, ObjectChanged, ObjectExists, StorageError
from gcs_sync.files import fingerprint, temp_name
from gcs_sync.auth.htpasswd import AccountedHtpasswd, HtpasswdProblem, check_entries
from gcs_sync.auth.password_file import replace_file

# Hash schemes pypiserver (through passlib) verifies; bcrypt needs the bcrypt 4.0.x that
# requirements.txt pins. Each costs some CPU at every login: bcrypt and sha512_crypt at
# passlib's default rounds about 0.2-0.3 s; apr_md5_crypt (Apache's default) far less,
# and far weaker.
SCHEMES = ("bcrypt", "sha512_crypt", "apr_md5_crypt")


class _UsageError(Exception):
    """Bad input from the operator: a user name or a password."""


@dataclasses.dataclass(frozen=True)
class _Content:
    data: bytes
    version: str


class _HtpasswdStore(Protocol):
    where: str

    def read(self) -> Optional[_Content]:
        """The file's bytes and version; None if there is no such file."""

    def write(self, data: bytes, version: Optional[str]) -> None:
        """Store ``data`` over ``version`` (None: only if there is no file); raise
        ObjectChanged if it is no longer at that version."""

    def announce(self) -> int:
        """Tell the servers; the command's exit code."""


class LocalHtpasswd:
    """A local htpasswd file: pypiserver re-reads it when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().absolute()
        self.where = str(self.path)

    def read(self) -> Optional[_Content]:
        try:
            with open(self.path, "rb") as source:
                return _Content(source.read(), fingerprint(os.fstat(source.fileno())))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("PASSWORD_FILE", f"cannot read htpasswd file {self.path}: {exc}") from exc

    def write(self, data: bytes, version: Optional[str]) -> None:
        temp = self.path.with_name(temp_name(self.path.name))
        try:
            mode = self._mode()
            temp.touch(mode=mode)
            temp.chmod(mode)  # as the file it replaces, whatever the umask
            temp.write_bytes(data)
            # Check, then replace: the window is a few microseconds, not the prompt's.
            if self._version() != version:
                raise ObjectChanged("write", self.where, "changed while this command ran")
            replace_file(temp, self.path)  # a worker reading it sees the old file or the new
        except OSError as exc:
            raise ConfigError("PASSWORD_FILE", f"cannot write htpasswd file {self.path}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)

    def _mode(self) -> int:
        """The permissions of the file replaced; a new one is readable by its owner only."""
        try:
            return self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            return 0o600

    def _version(self) -> Optional[str]:
        try:
            return fingerprint(self.path.stat())
        except FileNotFoundError:
            return None

    def announce(self) -> int:
        return EXIT_OK


class BucketHtpasswd:
    """An htpasswd object in the bucket; the change marker tells the servers."""

    def __init__(self, url: str, driver: FileStoreDriver, name: str, packages: FileStoreDriver) -> None:
        self.where = url
        self._driver = driver  # for the object's folder
        self._name = name
        self._packages = packages  # for the package folder's change marker

    def read(self) -> Optional[_Content]:
        found = self._driver.stat(self._name)
        if found is None:
            return None
        with tempfile.TemporaryDirectory(prefix="gcs-sync-users-") as scratch:
            copy = Path(scratch) / "htpasswd"
            self._driver.download(self._name, copy, found.version)  # that version's bytes
            return _Content(copy.read_bytes(), found.version)

    def write(self, data: bytes, version: Optional[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="gcs-sync-users-") as scratch:
            source = Path(scratch) / "htpasswd"
            source.write_bytes(data)
            try:
                self._driver.upload(self._name, source, create_only=version is None,
                                    if_version=None if version is None else Version(version),
                                    metadata={SHA256_KEY: hashlib.sha256(data).hexdigest()})
            except ObjectExists as exc:  # created by someone else meanwhile
                raise ObjectChanged("upload", self.where, "created while this command ran") from exc

    def announce(self) -> int:
        try:
            self._packages.touch_marker()
        except StorageError as exc:
            print(f"warning: the users are stored, but the change marker could not be rewritten ({exc}): "
                  "instances pick the change up at their next full listing (FULL_SYNC_INTERVAL)", file=sys.stderr)
            return EXIT_DIFFERENT
        print("every instance reads it at its next check (within SYNC_INTERVAL, plus one sync)")
        return EXIT_OK


def open_store(args: argparse.Namespace, environ: Mapping[str, str]) -> _HtpasswdStore:
    """PASSWORD_FILE (``--password-file`` first), parsed as the server parses it."""
    merged = overridden_environ(args, environ)
    if args.password_file is not None:
        merged["PASSWORD_FILE"] = args.password_file
    value = password_file_setting(merged)
    if value is None:
        raise ConfigError("PASSWORD_FILE", "is not set: set it, or pass --password-file")
    if value == ".":
        raise ConfigError("PASSWORD_FILE", "is '.' (no authentication): there are no users to manage")
    if not is_object_url(value):
        return LocalHtpasswd(Path(value))
    # The bucket settings: the object's store, and the package folder's change marker.
    settings = store_settings(args, merged)
    location = parse_password_object(value, settings.storage_backend)
    assert location is not None  # a URL: an object, or ConfigError
    driver = make_driver(settings, bucket_name=location.bucket, prefix=location.folder)
    return BucketHtpasswd(str(location), driver, location.name, make_driver(settings))


def _users_of(content: _Content, store: _HtpasswdStore, scheme: Optional[str] = None) -> HtpasswdFile:
    try:
        users = HtpasswdFile.from_string(content.data, default_scheme=scheme)
        users.users()  # names are decoded here
    except ValueError as exc:  # a malformed line, or not UTF-8
        raise ConfigError("PASSWORD_FILE", f"cannot read htpasswd file {store.where}: {exc}") from exc
    return users


def _existing(store: _HtpasswdStore) -> _Content:
    content = store.read()
    if content is None:
        raise ConfigError("PASSWORD_FILE", f"no such file: {store.where} ('users add NAME' creates it)")
    return content


def _user_name(name: str) -> str:
    # ':' ends the name in a line; a leading '#' makes the line a comment; whitespace at
    # either end would not survive an edit by hand. passlib also refuses names over 255 bytes.
    if (not name or ":" in name or not name.isprintable() or name != name.strip() or name.startswith("#")
            or len(name.encode()) > 255):
        raise _UsageError(f"{name!r} is not a user name: 1 to 255 bytes, no ':', control characters, "
                          "leading '#' or surrounding spaces")
    return name


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise _UsageError("the passwords do not match; nothing was changed")
    if not password:
        raise _UsageError("the password is empty; nothing was changed")
    return password


def _written(store: _HtpasswdStore, users: HtpasswdFile, version: Optional[str]) -> bool:
    data = users.to_string()
    try:
        # The server's own check: never write a file it would refuse (an entry of another
        # scheme, a damaged hash). ``users add`` of that entry's user replaces it.
        check_entries(AccountedHtpasswd.from_string(data), store.where)
    except HtpasswdProblem as exc:
        raise ConfigError("PASSWORD_FILE", f"{exc}; nothing was written") from exc
    try:
        store.write(data, version)
    except ObjectChanged as exc:
        print(f"error: {store.where} changed while this command ran ({exc.cause}); nothing was written: "
              "run it again", file=sys.stderr)
        return False
    return True


def run_add(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = _user_name(args.name)
    store = open_store(args, environ)
    content = store.read()  # before the prompt: a bad PASSWORD_FILE fails first
    users = HtpasswdFile(default_scheme=args.scheme) if content is None else _users_of(content, store, args.scheme)
    updated = users.set_password(name, _new_password(args))
    if not _written(store, users, None if content is None else content.version):
        return EXIT_DIFFERENT
    print(f"{'updated the password of' if updated else 'added'} user {name!r} in {store.where}")
    return store.announce()


def run_remove(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = _user_name(args.name)
    store = open_store(args, environ)
    content = _existing(store)
    users = _users_of(content, store)
    if not users.delete(name):
        print(f"error: no user {name!r} in {store.where}", file=sys.stderr)
        return EXIT_DIFFERENT
    if not users.users():
        # The server refuses an htpasswd file without users (a start stops; a new version
        # of an object is not taken): add the next user first.
        print(f"error: {name!r} is the last user of {store.where}; add another one first", file=sys.stderr)
        return EXIT_DIFFERENT
    if not _written(store, users, content.version):
        return EXIT_DIFFERENT
    print(f"removed user {name!r} from {store.where}")
    return store.announce()


def run_list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store = open_store(args, environ)
    for name in sorted(_users_of(_existing(store), store).users()):
        print(name)  # names only, never a hash
    return EXIT_OK


_Command = Callable[[argparse.Namespace, Mapping[str, str]], int]


def _usage_errors_as_exit_code(run: _Command) -> _Command:
    def guarded(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return run(args, environ)
        except _UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return guarded


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    users_options = argparse.ArgumentParser(add_help=False)
    users_options.add_argument(
        "--password-file", metavar="PASSWORD_FILE",
        help="the htpasswd file: a local path, or gs://BUCKET/KEY or s3://BUCKET/KEY with the matching "
        "STORAGE_BACKEND [env PASSWORD_FILE]",
    )
    users = commands.add_parser(
        "users", help="add, remove or list the users of the htpasswd file (PASSWORD_FILE)",
        description="Manage the users of PASSWORD_FILE, a local htpasswd file or an object in the bucket. "
        "A change to an object reaches every instance within SYNC_INTERVAL plus one sync.",
    )
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add", parents=[users_options, parent], help="add a user, or change a user's password",
        description="Add user NAME, or change the password of an existing NAME. The password is asked "
        "twice on the terminal, or read as one line from stdin with --password-stdin; never from the "
        "command line.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    add.add_argument("--scheme", choices=SCHEMES, default="bcrypt",
                     help="how the password is hashed (default: bcrypt)")
    add.set_defaults(run=_usage_errors_as_exit_code(run_add))

    remove = actions.add_parser("remove", parents=[users_options, parent], help="remove a user",
                                description="Remove user NAME; exit code 1 if there is no such user.")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_usage_errors_as_exit_code(run_remove))

    listing = actions.add_parser("list", parents=[users_options, parent], help="list the user names",
                                 description="Print each user's name, one per line (never a hash).")
    listing.set_defaults(run=_usage_errors_as_exit_code(run_list))
